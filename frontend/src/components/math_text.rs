//! Example text with its LaTeX rendered as MathML.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::latex::{self, Node, Segment};

const MATHML_NS: &str = "http://www.w3.org/1998/Math/MathML";

/// Builds DOM nodes from a MathML tree. Text goes in as text nodes, so it is never parsed as markup.
fn build(node: &Node, document: &web_sys::Document) -> Option<web_sys::Node> {
    match node {
        Node::Text(text) => Some(document.create_text_node(text).unchecked_into()),
        Node::Element {
            tag,
            attrs,
            children,
        } => {
            let element = document.create_element_ns(Some(MATHML_NS), tag).ok()?;
            for (name, value) in attrs {
                let _ = element.set_attribute(name, value);
            }
            for child in children {
                if let Some(c) = build(child, document) {
                    let _ = element.append_child(&c);
                }
            }
            Some(element.unchecked_into())
        }
    }
}

/// One formula.
#[component]
fn Formula(latex: String, display: bool) -> impl IntoView {
    let holder = NodeRef::<leptos::html::Span>::new();
    let tree = latex::to_mathml(&latex, display);
    Effect::new(move |_| {
        if let Some(span) = holder.get() {
            let document = web_sys::window().and_then(|w| w.document());
            if let Some(node) = document.as_ref().and_then(|d| build(&tree, d)) {
                span.set_text_content(None);
                let _ = span.append_child(&node);
            }
        }
    });
    view! { <span class="formula" title=latex.clone() node_ref=holder>{latex.clone()}</span> }
}

/// Prose with inline and display math; newlines are kept.
#[component]
pub fn MathText(
    #[prop(into)] text: String,
    /// In a line of other text (a span, not a block): a piece of a thinking trace between
    /// budget forcing's marks.
    #[prop(optional)]
    inline: bool,
) -> impl IntoView {
    let segments = latex::split_math(&text);
    let parts = segments
        .into_iter()
        .map(|segment| match segment {
            Segment::Text(t) => view! { <span>{t}</span> }.into_any(),
            Segment::Math { latex, display } => view! { <Formula latex display/> }.into_any(),
        })
        .collect_view();
    if inline {
        view! { <span class="math-text">{parts}</span> }.into_any()
    } else {
        view! { <div class="math-text">{parts}</div> }.into_any()
    }
}
