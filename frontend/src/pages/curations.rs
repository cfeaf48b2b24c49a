//! `/curations`: every curation, and the form that starts one (a dataset, the s1 recipe or a
//! saved one, the target size, the seed, eval datasets to decontaminate against).
//! `/curations/:id`: the funnel (rows in and out of each stage, what each rule dropped), the
//! domains before and after, each stage's dropped rows with the reason, and the diff of two of
//! the output's versions.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use still_api::{
    CurationSummary, DecontaminationStage, DifficultyStage, DiversityStage, DomainSource,
    KeywordDomain, NearDuplicates, NewCuration, QualityPreview, QualityPreviewRequest,
    QualityStage, Recipe, RecipeRef, Stage, VersionDiff,
};

use crate::api::{self, ApiError};
use crate::components::histogram::Histogram;
use crate::components::{ErrorBox, poll_summary, text_field};
use crate::format::{cut, optional_number, thousands, timestamp};

fn finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// The s1 preset's difficulty budget (the server's `s1` recipe uses the same).
const S1_BUDGET: u32 = 1024;

/// The form's settings, as text the user types and boxes they tick.
#[derive(Clone, Copy)]
struct Form {
    dataset: RwSignal<String>,
    name: RwSignal<String>,
    saved: RwSignal<String>,
    target: RwSignal<String>,
    seed: RwSignal<String>,
    against: RwSignal<String>,
    models: RwSignal<String>,
    budget: RwSignal<String>,
    /// `field` or `keywords`.
    domain_kind: RwSignal<String>,
    domain_field: RwSignal<String>,
    keywords: RwSignal<String>,
    fallback: RwSignal<String>,
    keep_tag: RwSignal<String>,
    api_errors: RwSignal<bool>,
    image_refs: RwSignal<bool>,
    numbering: RwSignal<bool>,
    exact: RwSignal<bool>,
    near: RwSignal<bool>,
    threshold: RwSignal<String>,
    min_tokens: RwSignal<String>,
    max_tokens: RwSignal<String>,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A keyword classifier typed one domain per line, `domain: keyword, keyword, …` (blank lines
/// skipped); an error names the line.
fn keyword_domains(text: &str) -> Result<Vec<KeywordDomain>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((domain, keywords)) = line.split_once(':') else {
            return Err(format!(
                "keywords, line {}: write 'domain: keyword, keyword' (no ':' in '{}')",
                i + 1,
                cut(line, 40)
            ));
        };
        let domain = domain.trim();
        let keywords = list(keywords);
        if domain.is_empty() || keywords.is_empty() {
            return Err(format!(
                "keywords, line {}: give a domain name and at least one keyword",
                i + 1
            ));
        }
        out.push(KeywordDomain {
            domain: domain.to_string(),
            keywords,
        });
    }
    if out.is_empty() {
        return Err("keywords: give at least one line 'domain: keyword, keyword'".into());
    }
    Ok(out)
}

impl Form {
    fn new() -> Self {
        Self {
            dataset: RwSignal::new(String::new()),
            name: RwSignal::new(String::new()),
            saved: RwSignal::new(String::new()),
            target: RwSignal::new("1000".into()),
            seed: RwSignal::new("0".into()),
            against: RwSignal::new(String::new()),
            models: RwSignal::new(String::new()),
            budget: RwSignal::new(S1_BUDGET.to_string()),
            domain_kind: RwSignal::new("field".into()),
            domain_field: RwSignal::new("domain".into()),
            keywords: RwSignal::new(String::new()),
            fallback: RwSignal::new("other".into()),
            keep_tag: RwSignal::new(String::new()),
            api_errors: RwSignal::new(true),
            image_refs: RwSignal::new(true),
            numbering: RwSignal::new(true),
            exact: RwSignal::new(true),
            near: RwSignal::new(true),
            threshold: RwSignal::new("0.8".into()),
            min_tokens: RwSignal::new(String::new()),
            max_tokens: RwSignal::new(String::new()),
        }
    }

    fn quality(&self) -> Result<QualityStage, String> {
        let threshold = self.threshold.get();
        let near = if self.near.get() {
            let threshold: f64 = threshold
                .trim()
                .parse()
                .map_err(|_| format!("near-duplicate threshold: '{threshold}' is not a number"))?;
            Some(NearDuplicates {
                threshold,
                ..NearDuplicates::default()
            })
        } else {
            None
        };
        Ok(QualityStage {
            api_errors: self.api_errors.get(),
            image_refs: self.image_refs.get(),
            numbering_artifacts: self.numbering.get(),
            exact_duplicates: self.exact.get(),
            near_duplicates: near,
            min_trace_tokens: optional_number("min trace tokens", &self.min_tokens.get())?,
            max_trace_tokens: optional_number("max trace tokens", &self.max_tokens.get())?,
            ..QualityStage::default()
        })
    }

    /// The recipe the settings describe: quality, decontamination (when eval datasets are given),
    /// difficulty (when models are), diversity.
    fn recipe(&self) -> Result<Recipe, String> {
        let mut stages = vec![Stage::Quality(self.quality()?)];
        let against = list(&self.against.get());
        if !against.is_empty() {
            stages.push(Stage::Decontamination(DecontaminationStage {
                against,
                n: 8,
            }));
        }
        let models = list(&self.models.get());
        if !models.is_empty() {
            stages.push(Stage::Difficulty(DifficultyStage {
                models,
                max_thinking_tokens: optional_number("difficulty budget", &self.budget.get())?
                    .ok_or("difficulty budget: give a number of thinking tokens")?,
                max_answer_tokens: None,
                preset: None,
                min_trace_tokens: None,
            }));
        }
        stages.push(Stage::Diversity(DiversityStage {
            domain: self.domain()?,
            target: optional_number("target size", &self.target.get())?
                .ok_or("target size: give the number of rows to keep")?,
            keep_tag: self.keep_tag(),
        }));
        Ok(Recipe {
            stages,
            tokenizer: None,
        })
    }

    /// Where the diversity stage reads each row's domain.
    fn domain(&self) -> Result<DomainSource, String> {
        if self.domain_kind.get() == "keywords" {
            let fallback = self.fallback.get().trim().to_string();
            return Ok(DomainSource::Keywords {
                domains: keyword_domains(&self.keywords.get())?,
                fallback: if fallback.is_empty() {
                    "other".into()
                } else {
                    fallback
                },
            });
        }
        let field = self.domain_field.get().trim().to_string();
        if field.is_empty() {
            return Err("domain field: name the field that holds each row's domain".into());
        }
        Ok(DomainSource::Field(field))
    }

    /// The tag of the seed set the diversity stage always keeps.
    fn keep_tag(&self) -> Option<String> {
        Some(self.keep_tag.get().trim().to_string()).filter(|t| !t.is_empty())
    }

    /// A saved recipe by name, the `s1` preset when the settings are its own (so the output is
    /// named after it), or the settings as an inline recipe.
    fn request(&self) -> Result<NewCuration, String> {
        let seed = optional_number::<u64>("seed", &self.seed.get())?;
        let name = Some(self.name.get().trim().to_string()).filter(|n| !n.is_empty());
        let dataset = self.dataset.get().trim().to_string();
        if dataset.is_empty() {
            return Err("dataset: name the dataset to curate".into());
        }
        let mut recipe = self.saved.get().trim().to_string();
        if recipe.is_empty() {
            let inline = self.recipe()?;
            let s1_like = self.quality()? == QualityStage::default()
                && self.domain()? == DomainSource::Field("domain".into())
                && self.keep_tag().is_none()
                && self.budget.get().trim() == S1_BUDGET.to_string();
            if !s1_like {
                return Ok(NewCuration {
                    dataset,
                    recipe: RecipeRef::Inline(inline),
                    target: None,
                    seed,
                    decontaminate_against: None,
                    difficulty_models: None,
                    name,
                });
            }
            recipe = "s1".into();
        }
        // A named recipe takes the target, eval datasets and models from the form.
        let against = list(&self.against.get());
        let models = list(&self.models.get());
        Ok(NewCuration {
            dataset,
            recipe: RecipeRef::Named(recipe),
            target: optional_number("target size", &self.target.get())?,
            seed,
            decontaminate_against: (!against.is_empty()).then_some(against),
            difficulty_models: (!models.is_empty()).then_some(models),
            name,
        })
    }
}

/// A rule's box, with what the last count said it removes.
fn rule_box(
    label: &'static str,
    rule: &'static str,
    on: RwSignal<bool>,
    preview: RwSignal<Option<Result<QualityPreview, ApiError>>>,
) -> impl IntoView {
    let count = move || {
        preview.with(|p| match p {
            Some(Ok(p)) => {
                let n = p.rules.iter().find(|r| r.rule == rule).map_or(0, |r| r.n);
                format!(" — removes {}", thousands(n))
            }
            _ => String::new(),
        })
    };
    view! {
        <label class="check">
            <input type="checkbox" data-test=format!("rule-on-{rule}") prop:checked=move || on.get()
                on:change=move |ev| on.set(event_target_checked(&ev))/>
            {format!(" {label}")}
            <span class="meta" data-test=format!("count-{rule}")>{count}</span>
        </label>
    }
}

#[component]
pub fn CurationsPage() -> impl IntoView {
    let list_of = LocalResource::new(api::curations);
    let recipes = LocalResource::new(api::curation_recipes);
    let f = Form::new();
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let preview = RwSignal::new(None::<Result<QualityPreview, ApiError>>);
    let save_as = RwSignal::new(String::new());
    let saved_note = RwSignal::new(None::<String>);
    let navigate = use_navigate();

    // `/curations?dataset=NAME` (the dataset page's link) fills the dataset in.
    if let Some(d) = use_query_map().read_untracked().get("dataset") {
        f.dataset.set(d);
    }

    let by_keywords = move || f.domain_kind.get() == "keywords";
    let count = move |_| {
        let (quality, domain) = match f.quality().and_then(|q| Ok((q, f.domain()?))) {
            Ok(q) => q,
            Err(e) => return error.set(Some(e)),
        };
        let request = QualityPreviewRequest {
            dataset: f.dataset.get().trim().to_string(),
            quality,
            tokenizer: None,
            domain: Some(domain),
            keep_tag: f.keep_tag(),
        };
        error.set(None);
        preview.set(None);
        spawn_local(async move { preview.set(Some(api::preview_quality(&request).await)) });
    };
    let start = move |_| {
        let request = match f.request() {
            Ok(r) => r,
            Err(e) => return error.set(Some(e)),
        };
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::create_curation(&request).await {
                Ok(c) => navigate(&format!("/curations/{}", c.id), Default::default()),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    let save = move |_| {
        let recipe = match f.recipe() {
            Ok(r) => r,
            Err(e) => return error.set(Some(e)),
        };
        let name = save_as.get().trim().to_string();
        error.set(None);
        spawn_local(async move {
            match api::save_curation_recipe(name, recipe).await {
                Ok(r) => {
                    saved_note.set(Some(format!("saved as '{}'", r.name)));
                    recipes.refetch();
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <h1>"Curations"</h1>
        <section class="panel">
            <h2>"Curate a dataset"</h2>
            <p class="meta">"s1's pipeline: quality rules, decontamination against eval sets, difficulty (rows a reference model solves are dropped), then domain-uniform sampling weighted 2^(−rank) by trace length. Every stage cuts a version of the output dataset."</p>
            <div class="form-grid">
                {text_field("Dataset (name or id)", "cur-dataset", f.dataset)}
                {text_field("Name (names the output dataset too; optional)", "cur-name", f.name)}
                {text_field("Target size", "cur-target", f.target)}
                {text_field("Seed", "cur-seed", f.seed)}
            </div>
            <fieldset>
                <legend>"1 · Quality"</legend>
                {rule_box("API error text", "api_error", f.api_errors, preview)}
                {rule_box("image references (![, [asy])", "image_reference", f.image_refs, preview)}
                {rule_box("numbering artefacts (p1.)", "numbering_artifact", f.numbering, preview)}
                {rule_box("exact duplicate questions", "exact_duplicate", f.exact, preview)}
                {rule_box("near-duplicates (MinHash, Jaccard ≥ threshold)", "near_duplicate", f.near, preview)}
                <div class="form-grid">
                    {text_field("Near-duplicate threshold", "cur-threshold", f.threshold)}
                    {text_field("Min trace tokens", "cur-min-tokens", f.min_tokens)}
                    {text_field("Max trace tokens", "cur-max-tokens", f.max_tokens)}
                </div>
                <p class="meta">"Always on: rows missing a question or an answer"
                    <span data-test="count-missing_field">{move || preview.with(|p| match p {
                        Some(Ok(p)) => format!(" — removes {}", thousands(p.rules.iter().find(|r| r.rule == "missing_field").map_or(0, |r| r.n))),
                        _ => String::new(),
                    })}</span>
                    {move || preview.with(|p| match p {
                        Some(Ok(p)) => {
                            let short = p.rules.iter().find(|r| r.rule == "trace_too_short").map_or(0, |r| r.n);
                            let long = p.rules.iter().find(|r| r.rule == "trace_too_long").map_or(0, |r| r.n);
                            format!("; trace too short {}, too long {}", thousands(short), thousands(long))
                        }
                        _ => String::new(),
                    })}
                </p>
                <button data-test="preview-quality" on:click=count>"Count what each rule removes (and the domains)"</button>
                {move || preview.get().map(|p| match p {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(p) => view! {
                        <p class="meta" data-test="preview-total">{format!("The stage removes {} of {} rows (a row counts once, under its first rule).", thousands(p.n_removed), thousands(p.n_rows))}</p>
                        <Histogram stats=p.trace_tokens unit="trace tokens".to_string()/>
                    }.into_any(),
                })}
            </fieldset>
            <fieldset>
                <legend>"2 · Decontamination"</legend>
                {text_field("8-gram overlap against (eval datasets, comma-separated)", "cur-against", f.against)}
            </fieldset>
            <fieldset>
                <legend>"3 · Difficulty"</legend>
                <div class="form-grid">
                    {text_field("Reference models (comma-separated; none skips the stage)", "cur-models", f.models)}
                    {text_field("Thinking budget (tokens)", "cur-budget", f.budget)}
                </div>
            </fieldset>
            <fieldset>
                <legend>"4 · Diversity"</legend>
                <div class="form-grid">
                    <label>"Each row's domain from"
                        <select data-test="cur-domain-kind" prop:value=move || f.domain_kind.get()
                            on:change=move |ev| f.domain_kind.set(event_target_value(&ev))>
                            <option value="field">"a field of the row"</option>
                            <option value="keywords">"a keyword classifier"</option>
                        </select>
                    </label>
                    <Show when=move || !by_keywords()>
                        {text_field("Domain field (domain, source, or a metadata key)", "cur-domain", f.domain_field)}
                    </Show>
                    <Show when=by_keywords>
                        {text_field("Rows with no keyword go to", "cur-fallback", f.fallback)}
                    </Show>
                    {text_field("Always keep rows tagged (a seed set; optional)", "cur-keep-tag", f.keep_tag)}
                </div>
                <Show when=by_keywords>
                    <label>"Keywords, one domain per line as 'domain: keyword, keyword'. A row goes to the domain with the most hits in its question (lowercased; ties go to the line above)."
                        <textarea rows="6" data-test="cur-keywords"
                            placeholder="algebra: polynomial, equation, roots\ngeometry: triangle, circle, angle\nnumber theory: prime, divisible, remainder"
                            prop:value=move || f.keywords.get()
                            on:input=move |ev| f.keywords.set(event_target_value(&ev))></textarea>
                    </label>
                </Show>
                <button data-test="preview-domains" on:click=count>"Count domains"</button>
                {move || preview.get().and_then(Result::ok).map(|p| view! {
                    <p class="meta" data-test="preview-keep">{format!("{} rows carry the keep tag.", thousands(p.n_keep_tagged))}</p>
                    <table class="grid" data-test="preview-domains-table">
                        <thead><tr><th>"Domain"</th><th class="num">"Rows"</th></tr></thead>
                        <tbody>
                            {p.domains.into_iter().map(|d| view! {
                                <tr data-test="preview-domain"><td>{d.domain}</td><td class="num">{thousands(d.n)}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                })}
            </fieldset>
            <div class="form-grid">
                <label>"Or run a saved recipe (the settings above are then unused but decontamination, models and target)"
                    <input type="text" list="saved-recipes" data-test="cur-recipe" prop:value=move || f.saved.get()
                        on:input=move |ev| f.saved.set(event_target_value(&ev))/>
                </label>
                <datalist id="saved-recipes">
                    {move || recipes.get().and_then(Result::ok).unwrap_or_default().into_iter()
                        .map(|r| view! { <option value=r.name></option> }).collect_view()}
                </datalist>
            </div>
            {move || error.get().map(|e| view! { <div class="error" data-test="cur-error">{e}</div> })}
            <button data-test="start-curation" disabled=move || busy.get() on:click=start>"Start curating"</button>
            <div class="form-grid">
                {text_field("Save these settings as a recipe named", "save-recipe-name", save_as)}
            </div>
            <button data-test="save-recipe" on:click=save>"Save recipe"</button>
            {move || saved_note.get().map(|n| view! { <span class="meta" data-test="saved-note">{n}</span> })}
        </section>
        <section class="panel">
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || list_of.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No curations yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="grid" data-test="curations">
                            <thead><tr><th>"Name"</th><th>"Status"</th><th>"Source"</th><th>"Funnel"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|c| {
                                    let funnel = funnel_line(&c);
                                    let source = format!("{} v{}", c.dataset_name, c.source_version);
                                    let created = timestamp(&c.created_at);
                                    view! {
                                        <tr data-test="curation-row">
                                            <td><A href=format!("/curations/{}", c.id)>{c.name}</A></td>
                                            <td><span class=format!("status {}", c.status)>{c.status.clone()}</span></td>
                                            <td>{source}</td>
                                            <td class="num">{funnel}</td>
                                            <td>{created}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// `59,029 → 51,581 → … ` from the source through each finished stage.
pub fn funnel_line(c: &CurationSummary) -> String {
    std::iter::once(c.source_rows)
        .chain(
            c.stages
                .iter()
                .filter(|s| s.version.is_some())
                .map(|s| s.n_out),
        )
        .map(thousands)
        .collect::<Vec<_>>()
        .join(" → ")
}

#[component]
pub fn CurationPage() -> impl IntoView {
    let params = use_params_map();
    let state = RwSignal::new(None::<Result<CurationSummary, ApiError>>);
    let fetch = move || {
        let id = params.read_untracked().get("id").unwrap_or_default();
        async move { api::curation(&id).await }
    };
    let load = poll_summary(state, fetch, |c| !finished(&c.status));
    let reload = Callback::new(move |()| load());
    // The panels a user opens (a rule's dropped rows, the diff) live outside the polled view, so
    // a poll while the curation runs redraws the funnel without closing them.
    let drops = RwSignal::new(None::<(i64, i64, Option<String>)>);
    let output = Memo::new(move |_| {
        state.with(|s| match s {
            Some(Ok(c)) => c.output.as_ref().map(|o| (o.dataset_id, o.version)),
            _ => None,
        })
    });
    view! {
        {move || match state.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e/> }.into_any(),
            Some(Ok(c)) => view! { <CurationView curation=c reload drops/> }.into_any(),
        }}
        {move || drops.get().map(|(id, stage, rule)| view! { <Drops id stage rule/> })}
        {move || output.get().map(|(dataset, last)| view! { <Diff dataset last/> })}
    }
}

#[component]
fn CurationView(
    curation: CurationSummary,
    reload: Callback<()>,
    drops: RwSignal<Option<(i64, i64, Option<String>)>>,
) -> impl IntoView {
    let c = curation;
    let id = c.id;
    let cancel_error = RwSignal::new(None::<ApiError>);
    let cancel = move |_| {
        spawn_local(async move {
            match api::cancel_curation(id).await {
                Ok(_) => reload.run(()),
                Err(e) => cancel_error.set(Some(e)),
            }
        })
    };
    let going = !finished(&c.status);
    let output = c.output.clone();
    let domains_after = c
        .stages
        .last()
        .map(|s| s.domains.clone())
        .unwrap_or_default();
    view! {
        <div class="dataset-head">
            <h1 data-test="curation-name">{c.name.clone()}</h1>
            <p class="meta">
                <span class=format!("status {}", c.status) data-test="curation-status">{c.status.clone()}</span>
                " · recipe "{c.recipe_name.clone().unwrap_or_else(|| "inline".into())}
                " · seed "{c.seed}
                " · from "<A href=format!("/datasets/{}", c.dataset_id)>{format!("{} v{}", c.dataset_name, c.source_version)}</A>
                {output.clone().map(|o| view! {
                    " into "<A href=format!("/datasets/{}", o.dataset_id) attr:data-test="curation-output">{format!("{} v{}", o.dataset, o.version)}</A>
                    <code class="meta">{format!(" {}", cut(&o.content_hash, 12))}</code>
                })}
            </p>
            {going.then(|| view! { <button class="danger" data-test="cancel-curation" on:click=cancel>"Cancel"</button> })}
            {move || cancel_error.get().map(|e| view! { <ErrorBox error=e/> })}
            {c.error.clone().map(|e| view! { <div class="error" data-test="curation-error">{e}</div> })}
        </div>
        <section class="panel">
            <h2>"Funnel"</h2>
            <p class="meta" data-test="curation-funnel">{funnel_line(&c)}</p>
            <table class="grid" data-test="curation-stages">
                <thead><tr><th>"Stage"</th><th class="num">"In"</th><th class="num">"Out"</th><th>"Version"</th><th>"Dropped by"</th></tr></thead>
                <tbody>
                    <tr><td>"source"</td><td></td><td class="num">{thousands(c.source_rows)}</td><td>{format!("v{}", c.source_version)}</td><td></td></tr>
                    {c.stages.iter().map(|s| {
                        let idx = s.index;
                        let rules = s.rules.clone();
                        view! {
                            <tr data-test="curation-stage">
                                <td>{s.name.clone()}{(!s.evals.is_empty()).then(|| view! {
                                    " ("{s.evals.iter().map(|e| view! { <A href=format!("/evals/{e}")>{format!("eval {e}")}</A>" " }).collect_view()}")"
                                })}</td>
                                <td class="num">{thousands(s.n_in)}</td>
                                <td class="num">{thousands(s.n_out)}</td>
                                <td>{s.version.map(|v| format!("v{v}"))}</td>
                                <td>{rules.into_iter().map(|r| {
                                    let rule = r.rule.clone();
                                    view! {
                                        <button class="link" data-test=format!("rule-{}", r.rule)
                                            on:click=move |_| drops.set(Some((id, idx, Some(rule.clone()))))>
                                            {format!("{} {}", r.rule, thousands(r.n))}
                                        </button>" "
                                    }
                                }).collect_view()}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
        <section class="panel">
            <h2>"Domains"</h2>
            <table class="grid" data-test="curation-domains">
                <thead><tr><th>"Domain"</th><th class="num">"Source"</th><th class="num">"Output"</th></tr></thead>
                <tbody>
                    {c.source_domains.iter().map(|d| {
                        let after = domains_after.iter().find(|x| x.domain == d.domain).map_or(0, |x| x.n);
                        view! { <tr><td>{d.domain.clone()}</td><td class="num">{thousands(d.n)}</td><td class="num">{thousands(after)}</td></tr> }
                    }).collect_view()}
                </tbody>
            </table>
            <div class="histograms">
                {c.source_trace_tokens.clone().map(|t| view! {
                    <figure data-test="trace-before"><figcaption>"Trace tokens, source"</figcaption>
                        <Histogram stats=t unit="tokens".to_string()/></figure>
                })}
                {c.stages.iter().rev().find_map(|s| s.trace_tokens.clone()).filter(|_| output.is_some()).map(|t| view! {
                    <figure data-test="trace-after"><figcaption>"Trace tokens, output"</figcaption>
                        <Histogram stats=t unit="tokens".to_string()/></figure>
                })}
            </div>
        </section>
    }
}

/// Rows per page of a stage's dropped rows.
const DROPS_PAGE: i64 = 100;

#[component]
fn Drops(id: i64, stage: i64, rule: Option<String>) -> impl IntoView {
    let offset = RwSignal::new(0i64);
    let filter = rule
        .as_deref()
        .map(|r| format!("&rule={}", api::encode(r)))
        .unwrap_or_default();
    let page = LocalResource::new(move || {
        let query = format!(
            "stage={stage}&limit={DROPS_PAGE}&offset={}{filter}",
            offset.get()
        );
        async move { api::curation_drops(id, &query).await }
    });
    view! {
        <section class="panel">
            <h2>{format!("Dropped at stage {}{}", stage + 1, rule.map(|r| format!(" by {r}")).unwrap_or_default())}</h2>
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || page.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(p) => {
                        let from = offset.get_untracked();
                        let to = from + p.rows.len() as i64;
                        let total = p.total;
                        view! {
                        <p class="meta" data-test="drops-range">{format!("rows {}–{} of {}", thousands(from + 1), thousands(to), thousands(total))}
                            " "<button class="link" data-test="drops-prev" disabled=move || from == 0
                                on:click=move |_| offset.set((from - DROPS_PAGE).max(0))>"previous"</button>
                            " "<button class="link" data-test="drops-next" disabled=move || { to >= total }
                                on:click=move |_| offset.set(to)>"next"</button></p>
                        <table class="grid" data-test="curation-drops">
                            <thead><tr><th class="num">"Row"</th><th>"Rule"</th><th>"Why"</th><th>"Row (click to open)"</th></tr></thead>
                            <tbody>
                                {p.rows.into_iter().map(|d| view! {
                                    <tr data-test="curation-drop">
                                        <td class="num">{d.ordinal}</td>
                                        <td>{d.rule}</td>
                                        <td data-test="drop-detail">{d.detail}</td>
                                        <td><details data-test="drop-row">
                                            <summary>{cut(&d.fields.question, 200)}</summary>
                                            <p><strong>"Question "</strong>{d.fields.question.clone()}</p>
                                            <p data-test="drop-thinking"><strong>"Thinking "</strong>{d.fields.thinking}</p>
                                            <p><strong>"Answer "</strong>{d.fields.answer}</p>
                                        </details></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn Diff(dataset: i64, last: i64) -> impl IntoView {
    let a = RwSignal::new("1".to_string());
    let b = RwSignal::new(last.to_string());
    let result = RwSignal::new(None::<Result<VersionDiff, ApiError>>);
    let compare = move |_| {
        let (Ok(va), Ok(vb)) = (a.get().trim().parse::<i64>(), b.get().trim().parse::<i64>())
        else {
            result.set(Some(Err(ApiError {
                status: 0,
                message: "give two version numbers".into(),
            })));
            return;
        };
        spawn_local(async move { result.set(Some(api::version_diff(dataset, va, vb).await)) });
    };
    view! {
        <section class="panel">
            <h2>"Compare two versions of the output"</h2>
            <div class="form-grid">
                <label>"From version"<input type="text" data-test="diff-a" prop:value=move || a.get() on:input=move |ev| a.set(event_target_value(&ev))/></label>
                <label>"To version"<input type="text" data-test="diff-b" prop:value=move || b.get() on:input=move |ev| b.set(event_target_value(&ev))/></label>
            </div>
            <button data-test="diff-versions" on:click=compare>"Diff"</button>
            {move || result.get().map(|r| match r {
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                Ok(d) => {
                    let (va, vb) = (d.a.version, d.b.version);
                    view! {
                    <p class="meta" data-test="diff-counts">{format!("{} added · {} removed · {} changed · {} unchanged",
                        thousands(d.n_added), thousands(d.n_removed), thousands(d.n_changed), thousands(d.n_unchanged))}</p>
                    <table class="grid" data-test="diff-rows">
                        <thead><tr><th></th><th class="num">"Row"</th><th>"Question"</th><th>"Answer"</th></tr></thead>
                        <tbody>
                            {d.removed.into_iter().map(|r| view! { <tr class="removed"><td>"−"</td><td class="num">{r.ordinal}</td><td>{cut(&r.fields.question, 160)}</td><td>{cut(&r.fields.answer, 60)}</td></tr> }).collect_view()}
                            {d.added.into_iter().map(|r| view! { <tr class="added"><td>"+"</td><td class="num">{r.ordinal}</td><td>{cut(&r.fields.question, 160)}</td><td>{cut(&r.fields.answer, 60)}</td></tr> }).collect_view()}
                            {d.changed.into_iter().map(|c| view! {
                                <tr class="changed" data-test="diff-changed"><td>"~"</td><td class="num">{c.before.ordinal}</td>
                                    <td colspan="2">
                                        <table class="side-by-side">
                                            <thead><tr><th>"Field"</th><th>{format!("v{}", va)}</th><th>{format!("v{}", vb)}</th></tr></thead>
                                            <tbody>
                                                {c.fields.iter().map(|name| view! {
                                                    <tr><td>{name.clone()}</td>
                                                        <td class="removed">{cut(&field_text(&c.before.fields, name), 400)}</td>
                                                        <td class="added">{cut(&field_text(&c.after.fields, name), 400)}</td></tr>
                                                }).collect_view()}
                                            </tbody>
                                        </table>
                                    </td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
                }
            })}
        </section>
    }
}

/// One field of a row as text (what the diff names: a key of the row's JSON).
fn field_text(fields: &still_api::ExampleFields, name: &str) -> String {
    match serde_json::to_value(fields)
        .ok()
        .and_then(|v| v.get(name).cloned())
    {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_lines_become_domains_and_bad_lines_are_named() {
        let d = keyword_domains("algebra: polynomial, roots\n\n geometry :triangle,, circle \n")
            .unwrap();
        assert_eq!(
            d,
            vec![
                KeywordDomain {
                    domain: "algebra".into(),
                    keywords: vec!["polynomial".into(), "roots".into()],
                },
                KeywordDomain {
                    domain: "geometry".into(),
                    keywords: vec!["triangle".into(), "circle".into()],
                },
            ]
        );
        let e = keyword_domains("algebra: x\ngeometry triangle").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("geometry triangle"),
            "{e}"
        );
        let e = keyword_domains("algebra:").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("at least one keyword"),
            "{e}"
        );
        assert!(
            keyword_domains(" \n")
                .unwrap_err()
                .contains("at least one line")
        );
    }
}
