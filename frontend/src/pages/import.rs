//! The import panel: pick a file, preview how its rows map, adjust the mapping, import.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use still_api::{FieldMapping, FileFormat, ImportPreview, ImportReport, Preset};

use crate::api::{self, ApiError};
use crate::components::ErrorBox;
use crate::format::{cut, name_from_file, thousands};

/// How much of a text file the preview sends (Parquet needs the whole file: its index is at the end).
const PREVIEW_BYTES: f64 = 2.0 * 1024.0 * 1024.0;

fn selected_file(input: &NodeRef<leptos::html::Input>) -> Option<web_sys::File> {
    input
        .get()
        .and_then(|i| i.files())
        .and_then(|files| files.get(0))
}

/// Form fields shared by preview and import.
#[derive(Clone)]
struct Choices {
    name: String,
    format: String,
    preset: String,
    policy: String,
    append: bool,
    mapping: Option<FieldMapping>,
}

fn form_for(
    file: &web_sys::File,
    blob: &web_sys::Blob,
    choices: &Choices,
) -> Result<web_sys::FormData, ApiError> {
    let js = |e: wasm_bindgen::JsValue| ApiError {
        status: 0,
        message: format!("building the form: {e:?}"),
    };
    let form = web_sys::FormData::new().map_err(js)?;
    form.append_with_str("name", &choices.name).map_err(js)?;
    form.append_with_str("format", &choices.format)
        .map_err(js)?;
    form.append_with_str("preset", &choices.preset)
        .map_err(js)?;
    form.append_with_str("policy", &choices.policy)
        .map_err(js)?;
    form.append_with_str("mode", if choices.append { "append" } else { "create" })
        .map_err(js)?;
    form.append_with_str("file_name", &file.name())
        .map_err(js)?;
    if let Some(mapping) = &choices.mapping {
        let text = serde_json::to_string(mapping).map_err(|e| ApiError {
            status: 0,
            message: e.to_string(),
        })?;
        form.append_with_str("mapping", &text).map_err(js)?;
    }
    form.append_with_blob_and_filename("file", blob, &file.name())
        .map_err(js)?;
    Ok(form)
}

#[component]
pub fn ImportPanel(on_imported: Callback<ImportReport>) -> impl IntoView {
    let file_input = NodeRef::<leptos::html::Input>::new();
    let name = RwSignal::new(String::new());
    let format = RwSignal::new("auto".to_string());
    let preset = RwSignal::new("auto".to_string());
    let policy = RwSignal::new("skip".to_string());
    let append = RwSignal::new(false);
    let mapping = RwSignal::new(None::<FieldMapping>);
    let mapping_edited = RwSignal::new(false);
    let preview = RwSignal::new(None::<ImportPreview>);
    let report = RwSignal::new(None::<ImportReport>);
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(None::<&'static str>);

    let choices = move || Choices {
        name: name.get_untracked(),
        format: format.get_untracked(),
        preset: preset.get_untracked(),
        policy: policy.get_untracked(),
        append: append.get_untracked(),
        mapping: if mapping_edited.get_untracked() {
            mapping.get_untracked()
        } else {
            None
        },
    };

    let on_file = move |_| {
        preview.set(None);
        report.set(None);
        error.set(None);
        mapping.set(None);
        mapping_edited.set(false);
        if let Some(file) = selected_file(&file_input) {
            name.set(name_from_file(&file.name()));
        }
    };

    let run_preview = move |_| {
        let Some(file) = selected_file(&file_input) else {
            error.set(Some(ApiError {
                status: 0,
                message: "choose a file first".into(),
            }));
            return;
        };
        let is_parquet = format.get_untracked() == "parquet"
            || file.name().to_ascii_lowercase().ends_with(".parquet");
        let blob: web_sys::Blob = if is_parquet || file.size() <= PREVIEW_BYTES {
            file.clone().into()
        } else {
            match file.slice_with_f64_and_f64(0.0, PREVIEW_BYTES) {
                Ok(b) => b,
                Err(e) => {
                    error.set(Some(ApiError {
                        status: 0,
                        message: format!("reading the file: {e:?}"),
                    }));
                    return;
                }
            }
        };
        let form = match form_for(&file, &blob, &choices()) {
            Ok(f) => f,
            Err(e) => return error.set(Some(e)),
        };
        busy.set(Some("Reading the first rows…"));
        error.set(None);
        spawn_local(async move {
            match api::preview(form).await {
                Ok(p) => {
                    if !mapping_edited.get_untracked() {
                        mapping.set(Some(p.mapping.clone()));
                    }
                    preview.set(Some(p));
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(None);
        });
    };

    let run_import = move |_| {
        let Some(file) = selected_file(&file_input) else {
            error.set(Some(ApiError {
                status: 0,
                message: "choose a file first".into(),
            }));
            return;
        };
        let form = match form_for(&file, &file.clone().into(), &choices()) {
            Ok(f) => f,
            Err(e) => return error.set(Some(e)),
        };
        busy.set(Some("Uploading and importing…"));
        error.set(None);
        report.set(None);
        spawn_local(async move {
            match api::import(form).await {
                Ok(r) => {
                    report.set(Some(r.clone()));
                    preview.set(None);
                    on_imported.run(r);
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(None);
        });
    };

    let option = |value: &'static str| view! { <option value=value>{value}</option> };

    view! {
        <section class="panel" data-test="import-panel">
            <h2>"Import a file"</h2>
            <div class="form-row">
                <input type="file" node_ref=file_input data-test="import-file"
                    accept=".jsonl,.ndjson,.json,.csv,.parquet" on:change=on_file/>
                <label>"Dataset name "
                    <input type="text" data-test="import-name" prop:value=move || name.get()
                        on:input=move |ev| name.set(event_target_value(&ev))/>
                </label>
                <label class="check">
                    <input type="checkbox" prop:checked=move || append.get()
                        on:change=move |ev| append.set(event_target_checked(&ev))/>
                    " add to an existing dataset"
                </label>
            </div>
            <div class="form-row">
                <label>"Format "
                    <select data-test="import-format" on:change=move |ev| format.set(event_target_value(&ev))>
                        {FileFormat::ALL.iter().map(|f| option(f.as_str())).collect_view()}
                    </select>
                </label>
                <label>"Preset "
                    <select data-test="import-preset" on:change=move |ev| {
                        preset.set(event_target_value(&ev));
                        mapping_edited.set(false);
                    }>
                        {Preset::ALL.iter().map(|p| option(p.as_str())).collect_view()}
                    </select>
                </label>
                <label>"Bad rows "
                    <select data-test="import-policy" on:change=move |ev| policy.set(event_target_value(&ev))>
                        <option value="skip">"skip them and report"</option>
                        <option value="reject">"reject the file"</option>
                    </select>
                </label>
                <button on:click=run_preview data-test="preview-button">"Preview"</button>
                <button class="primary" on:click=run_import data-test="import-button"
                    disabled=move || busy.get().is_some()>"Import"</button>
            </div>
            {move || busy.get().map(|text| view! { <p class="loading">{text}</p> })}
            {move || error.get().map(|error| view! { <ErrorBox error/> })}
            {move || preview.get().map(|p| view! { <PreviewView preview=p mapping mapping_edited/> })}
            {move || report.get().map(|r| view! { <ReportView report=r/> })}
        </section>
    }
}

/// Reads one canonical field's column from a mapping.
type MappingGet = fn(&FieldMapping) -> Option<String>;
/// Writes one canonical field's column into a mapping.
type MappingSet = fn(&mut FieldMapping, Option<String>);

/// One canonical field's column picker.
#[component]
fn ColumnPick(
    label: &'static str,
    columns: Vec<String>,
    get: MappingGet,
    set: MappingSet,
    mapping: RwSignal<Option<FieldMapping>>,
    mapping_edited: RwSignal<bool>,
) -> impl IntoView {
    let current = move || {
        mapping
            .with(|m| m.as_ref().and_then(get))
            .unwrap_or_default()
    };
    view! {
        <label class="pick">{label}
            <select data-test=format!("map-{label}") on:change=move |ev| {
                let value = event_target_value(&ev);
                mapping.update(|m| if let Some(m) = m.as_mut() {
                    set(m, (!value.is_empty()).then_some(value));
                });
                mapping_edited.set(true);
            }>
                <option value="" selected=move || current().is_empty()>"—"</option>
                {columns.into_iter().map(|c| {
                    let selected_value = c.clone();
                    view! { <option value=c.clone() selected=move || current() == selected_value>{c.clone()}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

#[component]
fn PreviewView(
    preview: ImportPreview,
    mapping: RwSignal<Option<FieldMapping>>,
    mapping_edited: RwSignal<bool>,
) -> impl IntoView {
    let columns = preview.columns.clone();
    let picks: Vec<(&'static str, MappingGet, MappingSet)> = vec![
        (
            "question",
            |m| Some(m.question.clone()),
            |m, v| m.question = v.unwrap_or_default(),
        ),
        ("thinking", |m| m.thinking.clone(), |m, v| m.thinking = v),
        ("answer", |m| m.answer.clone(), |m, v| m.answer = v),
        ("solution", |m| m.solution.clone(), |m, v| m.solution = v),
        ("combined", |m| m.combined.clone(), |m, v| m.combined = v),
        ("source", |m| m.source.clone(), |m, v| m.source = v),
        ("domain", |m| m.domain.clone(), |m, v| m.domain = v),
        ("tags", |m| m.tags.clone(), |m, v| m.tags = v),
    ];
    view! {
        <div class="preview" data-test="preview">
            <p>
                {format!("Detected format {} and preset {}. Columns: {}.",
                    preview.format.as_str(), preview.preset.as_str(), preview.columns.join(", "))}
            </p>
            {preview.warning.clone().map(|w| view! { <p class="warning">{w}</p> })}
            <div class="mapping">
                <strong>"Field mapping "</strong>
                {picks.into_iter().map(|(label, get, set)| view! {
                    <ColumnPick label columns=columns.clone() get set mapping mapping_edited/>
                }).collect_view()}
                <label class="pick">"split marker"
                    <input type="text" prop:value=move || mapping.with(|m| m.as_ref().and_then(|m| m.split_marker.clone())).unwrap_or_default()
                        on:input=move |ev| {
                            let v = event_target_value(&ev);
                            mapping.update(|m| if let Some(m) = m.as_mut() { m.split_marker = (!v.is_empty()).then_some(v) });
                            mapping_edited.set(true);
                        }/>
                </label>
            </div>
            <p class="hint">"Change the mapping, then Preview again to check it, or Import."</p>
            <table class="grid compact">
                <thead><tr><th>"#"</th><th>"question"</th><th>"thinking"</th><th>"answer"</th></tr></thead>
                <tbody>
                    {preview.rows.into_iter().enumerate().map(|(i, row)| match row {
                        Ok(ex) => view! {
                            <tr>
                                <td>{i + 1}</td>
                                <td>{cut(&ex.question, 160)}</td>
                                <td>{cut(&ex.thinking, 120)}</td>
                                <td>{cut(&ex.answer, 80)}</td>
                            </tr>
                        }.into_any(),
                        Err(rejected) => view! {
                            <tr class="rejected">
                                <td>{rejected.record}</td>
                                <td colspan="3">{format!("rejected: {}", rejected.reason)}</td>
                            </tr>
                        }.into_any(),
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The report of a finished import.
#[component]
pub fn ReportView(report: ImportReport) -> impl IntoView {
    let dataset_link = report
        .dataset_id
        .map(|id| format!("/datasets/{id}"))
        .unwrap_or_default();
    let more = report
        .n_rejected
        .saturating_sub(report.rejected.len() as u64);
    view! {
        <div class="report" data-test="import-report">
            <p>
                <span data-test="report-imported">{thousands(report.n_imported as i64)}</span>
                " rows imported into "
                <A href=dataset_link>{report.dataset.clone()}</A>
                {format!(" from {} ({} / {}); ", report.file_name, report.format.as_str(), report.preset.as_str())}
                <span data-test="report-rejected">{thousands(report.n_rejected as i64)}</span>
                " rejected."
            </p>
            {(!report.rejected.is_empty()).then(|| view! {
                <table class="grid compact" data-test="rejected-rows">
                    <thead><tr><th>"record"</th><th>"line"</th><th>"reason"</th></tr></thead>
                    <tbody>
                        {report.rejected.iter().map(|r| view! {
                            <tr>
                                <td>{r.record}</td>
                                <td>{r.line.map(|l| l.to_string()).unwrap_or_default()}</td>
                                <td>{r.reason.clone()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
                {(more > 0).then(|| view! { <p class="hint">{format!("… and {more} more")}</p> })}
            })}
        </div>
    }
}
