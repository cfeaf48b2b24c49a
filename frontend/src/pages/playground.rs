//! `/playground`: chat with a registry model, streamed — the thinking and the answer shown apart
//! as they arrive, s1's budget-forcing controls, and the request as `curl` for `/v1` to copy.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::components::{ErrorBox, short_field};

/// One finished turn of the conversation.
#[derive(Clone, PartialEq)]
struct Turn {
    role: &'static str,
    thinking: String,
    content: String,
}

/// The request body the controls make (`stream` on); budget fields only when set.
pub fn request_body(
    model: &str,
    turns: &[(String, String)],
    max_tokens: &str,
    temperature: &str,
    budget: [&str; 3],
) -> Value {
    let mut body = json!({
        "model": model,
        "messages": turns.iter().map(|(role, content)| json!({"role": role, "content": content})).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let number = |text: &str| text.trim().parse::<f64>().ok();
    if let Some(m) = number(max_tokens) {
        body["max_tokens"] = json!(m as u64);
    }
    if let Some(t) = number(temperature) {
        body["temperature"] = json!(t);
    }
    for (key, value) in [
        "max_thinking_tokens",
        "min_thinking_tokens",
        "wait_extensions",
    ]
    .into_iter()
    .zip(budget)
    {
        if let Some(v) = number(value) {
            body[key] = json!(v as u64);
        }
    }
    body
}

/// The same request as a `curl` of `/v1` (with a token placeholder).
pub fn as_curl(origin: &str, body: &Value) -> String {
    let text = serde_json::to_string(body)
        .unwrap_or_default()
        .replace('\'', "'\\''");
    format!(
        "curl -N {origin}/v1/chat/completions \\\n  -H \"Authorization: Bearer $STILL_TOKEN\" \\\n  -H 'content-type: application/json' \\\n  -d '{text}'"
    )
}

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let models = LocalResource::new(api::models);
    let model = RwSignal::new(String::new());
    let input = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("256".to_string());
    let temperature = RwSignal::new("0".to_string());
    let max_thinking = RwSignal::new(String::new());
    let min_thinking = RwSignal::new(String::new());
    let waits = RwSignal::new(String::new());
    let history = RwSignal::new(Vec::<Turn>::new());
    let thinking = RwSignal::new(String::new());
    let answer = RwSignal::new(String::new());
    let status = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let turns = move |question: &str| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = history
            .get_untracked()
            .into_iter()
            .map(|t| (t.role.to_string(), t.content))
            .collect();
        if !question.is_empty() {
            out.push(("user".into(), question.to_string()));
        }
        out
    };
    let body_for = move |question: &str| {
        request_body(
            &model.get(),
            &turns(question),
            &max_tokens.get(),
            &temperature.get(),
            [&max_thinking.get(), &min_thinking.get(), &waits.get()],
        )
    };
    let send = move |_| {
        let question = input.get_untracked();
        if question.trim().is_empty() || model.get_untracked().is_empty() {
            return;
        }
        let body = body_for(&question);
        history.update(|h| {
            h.push(Turn {
                role: "user",
                thinking: String::new(),
                content: question.clone(),
            })
        });
        input.set(String::new());
        thinking.set(String::new());
        answer.set(String::new());
        status.set("streaming…".into());
        error.set(None);
        busy.set(true);
        spawn_local(async move {
            let result = api::stream_chat(&body, |chunk| {
                if let Some(t) = chunk["choices"][0]["delta"]["reasoning_content"].as_str() {
                    thinking.update(|s| s.push_str(t));
                }
                if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                    answer.update(|s| s.push_str(t));
                }
                if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
                    status.set(format!("finished: {f}"));
                }
                if let Some(u) = chunk["usage"].as_object() {
                    status.update(|s| {
                        s.push_str(&format!(
                            " · {} prompt + {} completion tokens",
                            u["prompt_tokens"], u["completion_tokens"]
                        ))
                    });
                }
                if let Some(m) = chunk["error"]["message"].as_str() {
                    status.set(format!("failed: {m}"));
                }
            })
            .await;
            if let Err(e) = result {
                status.set("failed".into());
                error.set(Some(e));
            }
            history.update(|h| {
                h.push(Turn {
                    role: "assistant",
                    thinking: thinking.get_untracked(),
                    content: answer.get_untracked(),
                })
            });
            busy.set(false);
        });
    };
    let origin = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default();
    view! {
        <h1>"Playground"</h1>
        <section class="panel" data-test="playground">
            <div class="form-row">
                <label>"Model "
                    <select data-test="playground-model" on:change=move |ev| model.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || models.get().and_then(Result::ok).unwrap_or_default().into_iter()
                            .filter(|m| !m.generation_only())
                            .map(|m| view! { <option value=m.name.clone()>{m.name.clone()}</option> })
                            .collect_view()}
                    </select>
                </label>
                {short_field("max tokens ", "playground-max-tokens", max_tokens)}
                {short_field("temperature ", "playground-temperature", temperature)}
                {short_field("max thinking ", "playground-max-thinking", max_thinking)}
                {short_field("min thinking ", "playground-min-thinking", min_thinking)}
                {short_field("Wait extensions ", "playground-waits", waits)}
                <button data-test="playground-clear" on:click=move |_| history.set(Vec::new())>"New chat"</button>
            </div>
            <div class="chat" data-test="playground-history">
                {move || history.get().into_iter().map(|t| view! {
                    <div class=format!("turn {}", t.role) data-test="playground-turn">
                        <strong>{t.role}</strong>
                        {(!t.thinking.is_empty()).then(|| view! { <details><summary>"thinking"</summary><pre class="thinking">{t.thinking.clone()}</pre></details> })}
                        <p>{t.content.clone()}</p>
                    </div>
                }).collect_view()}
            </div>
            <div class="form-row">
                <textarea data-test="playground-input" rows="3" cols="80" prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))></textarea>
                <button class="primary" data-test="playground-send" on:click=send disabled=move || busy.get()>"Send"</button>
            </div>
            <h3>"Thinking"</h3>
            <pre class="thinking" data-test="playground-thinking">{move || thinking.get()}</pre>
            <h3>"Answer"</h3>
            <pre data-test="playground-answer">{move || answer.get()}</pre>
            <p class="meta" data-test="playground-status">{move || status.get()}</p>
            {move || error.get().map(|error| view! { <ErrorBox error/> })}
            <h3>"As a request to /v1"</h3>
            <pre class="metadata" data-test="playground-curl">{move || as_curl(&origin, &body_for(&input.get()))}</pre>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_budget_fields_only_when_set() {
        let turns = vec![("user".to_string(), "hi".to_string())];
        let body = request_body("m", &turns, "64", "0.5", ["16", "", "2"]);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["max_thinking_tokens"], 16);
        assert_eq!(body["wait_extensions"], 2);
        assert!(body.get("min_thinking_tokens").is_none());
        assert_eq!(body["messages"][0]["content"], "hi");
        let curl = as_curl("http://127.0.0.1:8080", &body);
        assert!(curl.starts_with("curl -N http://127.0.0.1:8080/v1/chat/completions"));
        assert!(curl.contains("Bearer $STILL_TOKEN"));
    }
}
