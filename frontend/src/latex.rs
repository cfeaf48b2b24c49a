//! LaTeX in example text → MathML, as a plain tree the view layer turns into DOM nodes.
//!
//! Pure Rust (tested natively). The output is a tree of elements and text, never an HTML string,
//! so text from a dataset can never inject markup. The supported subset is what math datasets
//! use (fractions, roots, scripts, Greek, operators, `\text`, `\boxed`, `\left…\right`, matrices
//! and cases); an unknown command is shown as its own name rather than dropped.

/// A piece of example text: prose, or math with its display mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String),
    Math { latex: String, display: bool },
}

/// Splits text at math delimiters: `$$…$$`, `\[…\]`, `\(…\)` and `$…$`. A single `$` opens math
/// only when a non-space follows it and closes only when a non-space precedes it and no digit
/// follows it, so prices such as "$5 and $10" stay prose.
pub fn split_math(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let found = if let Some(body) = rest.strip_prefix("$$") {
            body.find("$$").map(|end| (2, end, 2, true))
        } else if let Some(body) = rest.strip_prefix("\\[") {
            body.find("\\]").map(|end| (2, end, 2, true))
        } else if let Some(body) = rest.strip_prefix("\\(") {
            body.find("\\)").map(|end| (2, end, 2, false))
        } else if rest.starts_with('$') && !(i > 0 && bytes[i - 1] == b'\\') {
            single_dollar_end(rest).map(|end| (1, end, 1, false))
        } else {
            None
        };
        match found {
            Some((open, end, close, display)) if end > 0 => {
                if !prose.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut prose)));
                }
                out.push(Segment::Math {
                    latex: rest[open..open + end].to_string(),
                    display,
                });
                i += open + end + close;
            }
            _ => {
                let c = rest.chars().next().expect("non-empty rest");
                prose.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !prose.is_empty() {
        out.push(Segment::Text(prose));
    }
    out
}

fn single_dollar_end(rest: &str) -> Option<usize> {
    let body = &rest[1..];
    if body.starts_with(char::is_whitespace) || body.is_empty() {
        return None;
    }
    let mut prev: Option<char> = None;
    for (i, c) in body.char_indices() {
        if c == '\n' && prev == Some('\n') {
            return None; // math never spans a paragraph break
        }
        if c == '$' && prev != Some('\\') {
            let closes = prev.is_some_and(|p| !p.is_whitespace())
                && !body[i + 1..].starts_with(|n: char| n.is_ascii_digit());
            return closes.then_some(i);
        }
        prev = Some(c);
    }
    None
}

/// A MathML element or text.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Element {
        tag: &'static str,
        attrs: Vec<(&'static str, String)>,
        children: Vec<Node>,
    },
    Text(String),
}

fn el(tag: &'static str, children: Vec<Node>) -> Node {
    Node::Element {
        tag,
        attrs: Vec::new(),
        children,
    }
}

fn el_attr(tag: &'static str, attrs: Vec<(&'static str, String)>, children: Vec<Node>) -> Node {
    Node::Element {
        tag,
        attrs,
        children,
    }
}

fn leaf(tag: &'static str, text: impl Into<String>) -> Node {
    el(tag, vec![Node::Text(text.into())])
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Cmd(String),
    Open,
    Close,
    Sup,
    Sub,
    Amp,
    Newline,
    Num(String),
    Letter(char),
    Other(char),
    /// The verbatim body of `\text{…}` and friends (spaces kept).
    Raw(String),
}

/// Commands whose braced argument is text, not math.
const TEXT_COMMANDS: &[&str] = &[
    "text",
    "textrm",
    "textit",
    "textbf",
    "mbox",
    "textnormal",
    "operatorname",
    "mathrm",
];

fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let mut j = i + 1;
                if j < chars.len() && chars[j].is_ascii_alphabetic() {
                    while j < chars.len() && chars[j].is_ascii_alphabetic() {
                        j += 1;
                    }
                    let name: String = chars[i + 1..j].iter().collect();
                    let is_text = TEXT_COMMANDS.contains(&name.as_str());
                    toks.push(Tok::Cmd(name));
                    i = j;
                    if is_text && chars.get(i) == Some(&'{') {
                        let mut depth = 0usize;
                        let mut k = i;
                        while k < chars.len() {
                            match chars[k] {
                                '{' => depth += 1,
                                '}' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                _ => {}
                            }
                            k += 1;
                        }
                        toks.push(Tok::Raw(chars[i + 1..k.min(chars.len())].iter().collect()));
                        i = (k + 1).min(chars.len());
                    }
                } else if j < chars.len() {
                    if chars[j] == '\\' {
                        toks.push(Tok::Newline);
                    } else {
                        toks.push(Tok::Cmd(chars[j].to_string()));
                    }
                    i = j + 1;
                } else {
                    toks.push(Tok::Other('\\'));
                    i = j;
                }
            }
            '{' => {
                toks.push(Tok::Open);
                i += 1;
            }
            '}' => {
                toks.push(Tok::Close);
                i += 1;
            }
            '^' => {
                toks.push(Tok::Sup);
                i += 1;
            }
            '_' => {
                toks.push(Tok::Sub);
                i += 1;
            }
            '&' => {
                toks.push(Tok::Amp);
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                toks.push(Tok::Num(chars[i..j].iter().collect()));
                i = j;
            }
            c if c.is_whitespace() => i += 1,
            c if c.is_alphabetic() => {
                toks.push(Tok::Letter(c));
                i += 1;
            }
            c => {
                toks.push(Tok::Other(c));
                i += 1;
            }
        }
    }
    toks
}

fn symbol(name: &str) -> Option<(&'static str, &'static str)> {
    // (tag, text): identifiers for letters, operators for the rest.
    Some(match name {
        "alpha" => ("mi", "α"),
        "beta" => ("mi", "β"),
        "gamma" => ("mi", "γ"),
        "delta" => ("mi", "δ"),
        "epsilon" => ("mi", "ϵ"),
        "varepsilon" => ("mi", "ε"),
        "zeta" => ("mi", "ζ"),
        "eta" => ("mi", "η"),
        "theta" => ("mi", "θ"),
        "vartheta" => ("mi", "ϑ"),
        "iota" => ("mi", "ι"),
        "kappa" => ("mi", "κ"),
        "lambda" => ("mi", "λ"),
        "mu" => ("mi", "μ"),
        "nu" => ("mi", "ν"),
        "xi" => ("mi", "ξ"),
        "pi" => ("mi", "π"),
        "rho" => ("mi", "ρ"),
        "sigma" => ("mi", "σ"),
        "tau" => ("mi", "τ"),
        "upsilon" => ("mi", "υ"),
        "phi" => ("mi", "ϕ"),
        "varphi" => ("mi", "φ"),
        "chi" => ("mi", "χ"),
        "psi" => ("mi", "ψ"),
        "omega" => ("mi", "ω"),
        "Gamma" => ("mi", "Γ"),
        "Delta" => ("mi", "Δ"),
        "Theta" => ("mi", "Θ"),
        "Lambda" => ("mi", "Λ"),
        "Xi" => ("mi", "Ξ"),
        "Pi" => ("mi", "Π"),
        "Sigma" => ("mi", "Σ"),
        "Phi" => ("mi", "Φ"),
        "Psi" => ("mi", "Ψ"),
        "Omega" => ("mi", "Ω"),
        "infty" => ("mi", "∞"),
        "ell" => ("mi", "ℓ"),
        "emptyset" => ("mi", "∅"),
        "varnothing" => ("mi", "∅"),
        "partial" => ("mi", "∂"),
        "nabla" => ("mi", "∇"),
        "angle" => ("mi", "∠"),
        "triangle" => ("mi", "△"),
        "times" => ("mo", "×"),
        "cdot" => ("mo", "⋅"),
        "div" => ("mo", "÷"),
        "pm" => ("mo", "±"),
        "mp" => ("mo", "∓"),
        "le" | "leq" => ("mo", "≤"),
        "ge" | "geq" => ("mo", "≥"),
        "ne" | "neq" => ("mo", "≠"),
        "approx" => ("mo", "≈"),
        "equiv" => ("mo", "≡"),
        "sim" => ("mo", "∼"),
        "simeq" => ("mo", "≃"),
        "cong" => ("mo", "≅"),
        "propto" => ("mo", "∝"),
        "to" | "rightarrow" => ("mo", "→"),
        "leftarrow" => ("mo", "←"),
        "Rightarrow" | "implies" => ("mo", "⇒"),
        "Leftarrow" => ("mo", "⇐"),
        "iff" | "Leftrightarrow" => ("mo", "⇔"),
        "mapsto" => ("mo", "↦"),
        "in" => ("mo", "∈"),
        "notin" => ("mo", "∉"),
        "ni" => ("mo", "∋"),
        "subset" => ("mo", "⊂"),
        "subseteq" => ("mo", "⊆"),
        "supset" => ("mo", "⊃"),
        "supseteq" => ("mo", "⊇"),
        "cup" => ("mo", "∪"),
        "cap" => ("mo", "∩"),
        "setminus" => ("mo", "∖"),
        "wedge" | "land" => ("mo", "∧"),
        "vee" | "lor" => ("mo", "∨"),
        "neg" | "lnot" => ("mo", "¬"),
        "forall" => ("mo", "∀"),
        "exists" => ("mo", "∃"),
        "sum" => ("mo", "∑"),
        "prod" => ("mo", "∏"),
        "int" => ("mo", "∫"),
        "oint" => ("mo", "∮"),
        "circ" => ("mo", "∘"),
        "bullet" => ("mo", "∙"),
        "star" => ("mo", "⋆"),
        "ast" => ("mo", "∗"),
        "perp" => ("mo", "⊥"),
        "parallel" => ("mo", "∥"),
        "mid" => ("mo", "|"),
        "vert" => ("mo", "|"),
        "Vert" => ("mo", "‖"),
        "ldots" | "dots" => ("mo", "…"),
        "cdots" => ("mo", "⋯"),
        "vdots" => ("mo", "⋮"),
        "ddots" => ("mo", "⋱"),
        "prime" => ("mo", "′"),
        "lfloor" => ("mo", "⌊"),
        "rfloor" => ("mo", "⌋"),
        "lceil" => ("mo", "⌈"),
        "rceil" => ("mo", "⌉"),
        "langle" => ("mo", "⟨"),
        "rangle" => ("mo", "⟩"),
        "{" | "lbrace" => ("mo", "{"),
        "}" | "rbrace" => ("mo", "}"),
        "%" => ("mo", "%"),
        "$" => ("mo", "$"),
        "#" => ("mo", "#"),
        "&" => ("mo", "&"),
        "_" => ("mo", "_"),
        "|" => ("mo", "‖"),
        "degree" => ("mo", "°"),
        "checkmark" => ("mo", "✓"),
        _ => return None,
    })
}

const FUNCTIONS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "ln", "lg", "exp", "max", "min", "lim", "sup", "inf", "gcd", "lcm", "det", "deg", "dim",
    "ker", "arg", "Pr", "mod", "bmod",
];

/// Groups nested deeper than this are shown as their source text: the parser, the tree's
/// rendering and its drop all recurse once per level, so a row of 100,000 `{` must not reach
/// them as 100,000 levels.
pub const MAX_DEPTH: usize = 48;

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

/// A token as the LaTeX source it came from.
fn tok_source(tok: &Tok) -> String {
    match tok {
        Tok::Cmd(c) => format!("\\{c}"),
        Tok::Open => "{".into(),
        Tok::Close => "}".into(),
        Tok::Sup => "^".into(),
        Tok::Sub => "_".into(),
        Tok::Amp => "&".into(),
        Tok::Newline => "\\\\".into(),
        Tok::Num(n) => n.clone(),
        Tok::Letter(c) | Tok::Other(c) => c.to_string(),
        Tok::Raw(t) => t.clone(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Parses until `}` (consumed), `\right`, `\end`, `&`, `\\` or the end.
    fn row(&mut self) -> Vec<Node> {
        if self.depth >= MAX_DEPTH {
            return vec![self.flat_group()];
        }
        self.depth += 1;
        let items = self.row_items();
        self.depth -= 1;
        items
    }

    /// Too deep: the rest of this group (to its matching `}`, consumed) as plain text, read
    /// without recursion.
    fn flat_group(&mut self) -> Node {
        let (mut text, mut open) = (String::new(), 0usize);
        while let Some(tok) = self.next() {
            match tok {
                Tok::Open => open += 1,
                Tok::Close if open == 0 => break,
                Tok::Close => open -= 1,
                _ => {}
            }
            text.push_str(&tok_source(&tok));
        }
        leaf("mtext", text)
    }

    fn row_items(&mut self) -> Vec<Node> {
        let mut items: Vec<Node> = Vec::new();
        while let Some(tok) = self.peek() {
            match tok {
                Tok::Close => {
                    self.pos += 1;
                    break;
                }
                Tok::Amp | Tok::Newline => break,
                Tok::Cmd(c) if c == "right" || c == "end" => break,
                Tok::Sup | Tok::Sub => {
                    let base = items.pop().unwrap_or_else(|| el("mrow", vec![]));
                    items.push(self.scripts(base));
                }
                _ => {
                    if let Some(node) = self.atom() {
                        items.push(node);
                    }
                }
            }
        }
        items
    }

    fn scripts(&mut self, base: Node) -> Node {
        let (mut sup, mut sub) = (None, None);
        while let Some(t) = self.peek() {
            match t {
                Tok::Sup if sup.is_none() => {
                    self.pos += 1;
                    sup = Some(self.argument());
                }
                Tok::Sub if sub.is_none() => {
                    self.pos += 1;
                    sub = Some(self.argument());
                }
                _ => break,
            }
        }
        let big = matches!(&base, Node::Element { tag: "mo", children, .. }
            if matches!(children.first(), Some(Node::Text(t)) if t == "∑" || t == "∏"));
        let big = big
            || matches!(&base, Node::Element { tag: "mi", attrs, .. } if attrs.iter().any(|(k, v)| *k == "data-fn" && v == "lim"));
        match (sup, sub) {
            (Some(p), Some(b)) => el(if big { "munderover" } else { "msubsup" }, vec![base, b, p]),
            (Some(p), None) => el(if big { "mover" } else { "msup" }, vec![base, p]),
            (None, Some(b)) => el(if big { "munder" } else { "msub" }, vec![base, b]),
            (None, None) => base,
        }
    }

    /// One argument: a braced group or a single atom.
    fn argument(&mut self) -> Node {
        match self.peek() {
            Some(Tok::Open) => {
                self.pos += 1;
                let items = self.row();
                wrap(items)
            }
            Some(_) => self.atom().unwrap_or_else(|| el("mrow", vec![])),
            None => el("mrow", vec![]),
        }
    }

    /// Raw text of a braced group (for `\text{…}`, `\begin{…}`).
    fn raw_group(&mut self) -> String {
        let mut out = String::new();
        if let Some(Tok::Raw(text)) = self.peek() {
            let text = text.clone();
            self.pos += 1;
            return text;
        }
        if self.peek() != Some(&Tok::Open) {
            return out;
        }
        self.pos += 1;
        let mut depth = 1;
        while let Some(t) = self.next() {
            match t {
                Tok::Open => {
                    depth += 1;
                    out.push('{');
                }
                Tok::Close => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    out.push('}');
                }
                Tok::Cmd(c) if c.len() == 1 => out.push_str(&c),
                Tok::Cmd(c) => {
                    out.push('\\');
                    out.push_str(&c);
                    out.push(' ');
                }
                Tok::Num(n) => out.push_str(&n),
                Tok::Letter(c) | Tok::Other(c) => out.push(c),
                Tok::Sup => out.push('^'),
                Tok::Sub => out.push('_'),
                Tok::Amp => out.push('&'),
                Tok::Newline => out.push('\n'),
                Tok::Raw(text) => out.push_str(&text),
            }
        }
        out
    }

    fn delimiter(&mut self) -> String {
        match self.next() {
            Some(Tok::Other('.')) | None => String::new(),
            Some(Tok::Other(c)) | Some(Tok::Letter(c)) => c.to_string(),
            Some(Tok::Cmd(c)) => symbol(&c).map(|(_, s)| s.to_string()).unwrap_or_default(),
            Some(_) => String::new(),
        }
    }

    fn atom(&mut self) -> Option<Node> {
        let tok = self.next()?;
        Some(match tok {
            Tok::Open => wrap(self.row()),
            Tok::Num(n) => leaf("mn", n),
            Tok::Letter(c) => leaf("mi", c.to_string()),
            Tok::Other(c) => leaf("mo", c.to_string()),
            Tok::Raw(text) => leaf("mtext", text),
            Tok::Close | Tok::Sup | Tok::Sub | Tok::Amp | Tok::Newline => return None,
            Tok::Cmd(cmd) => self.command(&cmd)?,
        })
    }

    fn command(&mut self, cmd: &str) -> Option<Node> {
        Some(match cmd {
            "frac" | "dfrac" | "tfrac" | "cfrac" => {
                let num = self.argument();
                let den = self.argument();
                el("mfrac", vec![num, den])
            }
            "binom" | "dbinom" | "tbinom" => {
                let n = self.argument();
                let k = self.argument();
                el(
                    "mrow",
                    vec![
                        leaf("mo", "("),
                        el_attr("mfrac", vec![("linethickness", "0".into())], vec![n, k]),
                        leaf("mo", ")"),
                    ],
                )
            }
            "sqrt" => {
                if self.peek() == Some(&Tok::Other('[')) {
                    self.pos += 1;
                    let mut index = Vec::new();
                    while let Some(t) = self.peek() {
                        if *t == Tok::Other(']') {
                            self.pos += 1;
                            break;
                        }
                        match self.atom() {
                            Some(n) => index.push(n),
                            None => break,
                        }
                    }
                    let radicand = self.argument();
                    el("mroot", vec![radicand, wrap(index)])
                } else {
                    el("msqrt", vec![self.argument()])
                }
            }
            "text" | "textrm" | "textit" | "textbf" | "mbox" | "operatorname" | "mathrm"
            | "mathit" | "mathbf" | "mathbb" | "mathcal" | "textnormal" => {
                let text = self.raw_group();
                let variant = match cmd {
                    "textbf" | "mathbf" => "bold",
                    "textit" | "mathit" => "italic",
                    "mathbb" => "double-struck",
                    "mathcal" => "script",
                    _ => "normal",
                };
                let tag = if cmd.starts_with("text") || cmd == "mbox" {
                    "mtext"
                } else {
                    "mi"
                };
                el_attr(
                    tag,
                    vec![("mathvariant", variant.into())],
                    vec![Node::Text(text)],
                )
            }
            "boxed" | "fbox" => el_attr(
                "mrow",
                vec![("class", "boxed".into())],
                vec![self.argument()],
            ),
            "overline" | "bar" | "hat" | "vec" | "tilde" | "widehat" | "dot" => {
                let accent = match cmd {
                    "overline" | "bar" => "‾",
                    "hat" | "widehat" => "^",
                    "vec" => "→",
                    "tilde" => "~",
                    _ => "˙",
                };
                el_attr(
                    "mover",
                    vec![("accent", "true".into())],
                    vec![self.argument(), leaf("mo", accent)],
                )
            }
            "underline" => el_attr("munder", vec![], vec![self.argument(), leaf("mo", "_")]),
            "left" => {
                let open = self.delimiter();
                let inner = self.row();
                let close = if self.peek() == Some(&Tok::Cmd("right".into())) {
                    self.pos += 1;
                    self.delimiter()
                } else {
                    String::new()
                };
                let mut items = Vec::new();
                if !open.is_empty() {
                    items.push(el_attr(
                        "mo",
                        vec![("stretchy", "true".into())],
                        vec![Node::Text(open)],
                    ));
                }
                items.extend(inner);
                if !close.is_empty() {
                    items.push(el_attr(
                        "mo",
                        vec![("stretchy", "true".into())],
                        vec![Node::Text(close)],
                    ));
                }
                el("mrow", items)
            }
            "right" => return None,
            "big" | "Big" | "bigg" | "Bigg" | "bigl" | "bigr" | "Bigl" | "Bigr" => {
                let d = self.delimiter();
                leaf("mo", d)
            }
            "begin" => self.environment(),
            "pmod" => {
                let arg = self.argument();
                el(
                    "mrow",
                    vec![
                        leaf("mo", "("),
                        el_attr(
                            "mi",
                            vec![("mathvariant", "normal".into())],
                            vec![Node::Text("mod".into())],
                        ),
                        arg,
                        leaf("mo", ")"),
                    ],
                )
            }
            "," | ":" | ";" | " " | "quad" | "qquad" | "!" | "enspace" | "thinspace" => {
                let width = match cmd {
                    "quad" => "1em",
                    "qquad" => "2em",
                    "!" => "0em",
                    ";" | " " => "0.28em",
                    _ => "0.17em",
                };
                el_attr("mspace", vec![("width", width.into())], vec![])
            }
            "displaystyle" | "textstyle" | "limits" | "nolimits" | "nonumber" | "notag" => {
                return None;
            }
            name if FUNCTIONS.contains(&name) => el_attr(
                "mi",
                vec![
                    ("mathvariant", "normal".into()),
                    ("data-fn", name.to_string()),
                ],
                vec![Node::Text(name.to_string())],
            ),
            name => match symbol(name) {
                Some((tag, text)) => leaf(tag, text),
                // Unknown: show the command itself, in a way that marks it as raw.
                None => el_attr(
                    "mtext",
                    vec![("class", "latex-unknown".into())],
                    vec![Node::Text(format!("\\{name}"))],
                ),
            },
        })
    }

    fn environment(&mut self) -> Node {
        let name = self.raw_group();
        let name = name.trim().trim_end_matches('*').to_string();
        if matches!(name.as_str(), "array" | "tabular") {
            let _columns = self.raw_group();
        }
        let mut rows: Vec<Vec<Node>> = Vec::new();
        let mut cells: Vec<Node> = Vec::new();
        loop {
            let items = self.row();
            cells.push(el("mtd", vec![wrap(items)]));
            match self.next() {
                Some(Tok::Amp) => continue,
                Some(Tok::Newline) => rows.push(std::mem::take(&mut cells)),
                Some(Tok::Cmd(c)) if c == "end" => {
                    let _ = self.raw_group();
                    break;
                }
                _ => break,
            }
        }
        if !(cells.len() == 1
            && matches!(&cells[0], Node::Element { children, .. } if matches!(children.first(), Some(Node::Element { children: c, .. }) if c.is_empty())))
        {
            rows.push(cells);
        }
        let table = el("mtable", rows.into_iter().map(|r| el("mtr", r)).collect());
        let (open, close) = match name.as_str() {
            "pmatrix" => ("(", ")"),
            "bmatrix" => ("[", "]"),
            "vmatrix" => ("|", "|"),
            "Bmatrix" => ("{", "}"),
            "cases" => ("{", ""),
            _ => ("", ""),
        };
        if open.is_empty() && close.is_empty() {
            return table;
        }
        let mut items = vec![leaf("mo", open), table];
        if !close.is_empty() {
            items.push(leaf("mo", close));
        }
        el("mrow", items)
    }
}

fn wrap(mut items: Vec<Node>) -> Node {
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        el("mrow", items)
    }
}

/// Converts a LaTeX formula to a `<math>` tree.
pub fn to_mathml(latex: &str, display: bool) -> Node {
    let mut parser = Parser {
        toks: tokenize(latex),
        pos: 0,
        depth: 0,
    };
    let mut items = Vec::new();
    while parser.pos < parser.toks.len() {
        items.extend(parser.row());
        // A stray `&`, `\\`, `\right` or `\end` at top level: skip it and go on.
        if parser.pos < parser.toks.len() {
            parser.pos += 1;
        }
    }
    el_attr(
        "math",
        vec![("display", if display { "block" } else { "inline" }.into())],
        vec![el("mrow", items)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(node: &Node) -> String {
        match node {
            Node::Text(t) => t.clone(),
            Node::Element { children, .. } => children.iter().map(text_of).collect(),
        }
    }

    fn tags_of(node: &Node, out: &mut Vec<&'static str>) {
        if let Node::Element { tag, children, .. } = node {
            out.push(tag);
            for c in children {
                tags_of(c, out);
            }
        }
    }

    fn depth_of(node: &Node) -> usize {
        match node {
            Node::Element { children, .. } => 1 + children.iter().map(depth_of).max().unwrap_or(0),
            _ => 1,
        }
    }

    #[test]
    fn deep_nesting_is_bounded_and_kept_as_text() {
        // One row of 100,000 `{` (and as many `}`) parses, renders bounded and drops.
        let deep = format!("x^{}{}", "{".repeat(100_000), "}".repeat(100_000));
        let tree = to_mathml(&deep, false);
        assert!(depth_of(&tree) < 3 * MAX_DEPTH, "depth {}", depth_of(&tree));
        // Unclosed braces too.
        let tree = to_mathml(&"{".repeat(100_000), true);
        assert!(depth_of(&tree) < 3 * MAX_DEPTH);
        // Ordinary nesting is unaffected.
        let tree = to_mathml("\\frac{1}{\\sqrt{x^{2}}}", false);
        assert!(!text_of(&tree).contains('{'), "{}", text_of(&tree));
    }

    #[test]
    fn prices_are_not_math_but_formulas_are() {
        assert_eq!(
            split_math("It costs $5 and $10 total."),
            vec![Segment::Text("It costs $5 and $10 total.".into())]
        );
        assert_eq!(
            split_math("Let $x^2$ be \\(y\\) and $$z$$."),
            vec![
                Segment::Text("Let ".into()),
                Segment::Math {
                    latex: "x^2".into(),
                    display: false
                },
                Segment::Text(" be ".into()),
                Segment::Math {
                    latex: "y".into(),
                    display: false
                },
                Segment::Text(" and ".into()),
                Segment::Math {
                    latex: "z".into(),
                    display: true
                },
                Segment::Text(".".into()),
            ]
        );
        assert_eq!(
            split_math("\\[a\\]"),
            vec![Segment::Math {
                latex: "a".into(),
                display: true
            }]
        );
    }

    #[test]
    fn fractions_roots_and_scripts_build_the_right_elements() {
        let tree = to_mathml("\\frac{1}{2} + \\sqrt{x_1^2} \\le \\sqrt[3]{8}", false);
        let mut tags = Vec::new();
        tags_of(&tree, &mut tags);
        for expected in ["math", "mfrac", "msqrt", "msubsup", "mroot", "mo"] {
            assert!(tags.contains(&expected), "{expected} missing from {tags:?}");
        }
        assert_eq!(text_of(&tree), "12+x12≤83");
    }

    #[test]
    fn text_boxed_left_right_and_unknown_commands() {
        let tree = to_mathml(
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)} \\text{ cm} \\foo",
            true,
        );
        assert_eq!(text_of(&tree), "(3,π2) cm\\foo");
        let mut tags = Vec::new();
        tags_of(&tree, &mut tags);
        assert!(tags.contains(&"mtext"));
        assert!(matches!(&tree, Node::Element { attrs, .. } if attrs[0].1 == "block"));
    }

    #[test]
    fn matrices_and_cases_become_tables() {
        let tree = to_mathml("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", true);
        let mut tags = Vec::new();
        tags_of(&tree, &mut tags);
        assert_eq!(tags.iter().filter(|t| **t == "mtr").count(), 2);
        assert_eq!(tags.iter().filter(|t| **t == "mtd").count(), 4);
        assert_eq!(text_of(&tree), "(1234)");
    }

    #[test]
    fn markup_in_math_stays_text() {
        let tree = to_mathml("<script>alert(1)</script>", false);
        let mut tags = Vec::new();
        tags_of(&tree, &mut tags);
        assert!(tags.iter().all(|t| t.starts_with('m')), "{tags:?}");
        assert_eq!(text_of(&tree), "<script>alert(1)</script>");
    }
}
