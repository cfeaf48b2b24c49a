//! From an answer's text (LaTeX, plain text or both) to tokens: spacing, `\left`/`\right`, font
//! and size commands dropped; `\dfrac`/`\tfrac`/`\cfrac` read as `\frac`; thousands separators
//! (`1,000`, `1 000`, `1{,}000`, `1,\!000`) joined outside brackets; `\text{…}` kept whole.

/// One token; `space` says whether white space came before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub space: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Digits with an optional fraction part, separators removed (`1000.5`, `.4` → `0.4`).
    Num(String),
    /// A one-letter name, or a Greek letter's name.
    Var(String),
    /// Two or more plain letters in a row (a word, a unit, or a product of names).
    Word(String),
    /// The content of `\text{…}`, `\mbox{…}`, `\textbf{…}` and the like, trimmed.
    Text(String),
    /// Any other command, without its backslash.
    Cmd(String),
    Begin(String),
    End(String),
    Sym(char),
    SetOpen,
    SetClose,
    RowSep,
    Le,
    Ge,
    Ne,
    Percent,
}

/// Commands a grader must also accept written with a doubled backslash (`\\frac`), as outputs
/// that went through one JSON escape too many carry them.
const KNOWN_COMMANDS: &[&str] = &[
    "frac",
    "dfrac",
    "tfrac",
    "cfrac",
    "sqrt",
    "left",
    "right",
    "boxed",
    "fbox",
    "pi",
    "le",
    "leq",
    "ge",
    "geq",
    "ne",
    "neq",
    "lt",
    "gt",
    "cdot",
    "times",
    "div",
    "pm",
    "mp",
    "infty",
    "text",
    "mathrm",
    "mathbf",
    "textbf",
    "mbox",
    "in",
    "cup",
    "cap",
    "approx",
    "sin",
    "cos",
    "tan",
    "sec",
    "csc",
    "cot",
    "log",
    "ln",
    "exp",
    "circ",
    "quad",
    "qquad",
    "begin",
    "end",
    "dots",
    "ldots",
    "cdots",
    "operatorname",
    "displaystyle",
    "textnormal",
];

/// `\\frac` → `\frac` for the commands above; a real row break (`\\` then anything else) stays.
pub fn collapse_double_backslashes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\\' {
            let rest = &s[i + 2..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            if name_len > 0 && KNOWN_COMMANDS.contains(&&rest[..name_len]) {
                out.push('\\');
                i += 2;
                continue;
            }
            out.push_str("\\\\");
            i += 2;
            continue;
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Reads `{…}` (balanced) starting at `chars[i]` after optional spaces: (content, index after).
fn braced(chars: &[char], mut i: usize) -> Option<(String, usize)> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if chars.get(i) != Some(&'{') {
        return None;
    }
    let mut depth = 0usize;
    let start = i + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((chars[start..i].iter().collect(), i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

pub fn lex(s: &str) -> Vec<Token> {
    let s = thousands_marks(&collapse_double_backslashes(s).replace("{,}", ","));
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    lex_into(&chars, &mut out);
    out
}

/// `,\!` (and the spaces after it) is a thousands comma; any other `\!` is spacing.
fn thousands_marks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\!") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        if out.ends_with(',') {
            rest = rest.trim_start_matches(' ');
        }
    }
    out.push_str(rest);
    out
}

fn lex_into(chars: &[char], out: &mut Vec<Token>) {
    let mut i = 0;
    let mut space = false;
    // Depth of ( [ \{ : separators inside brackets separate items, not thousands.
    let mut depth = 0i32;
    let push = |out: &mut Vec<Token>, tok: Tok, space: &mut bool| {
        out.push(Token { tok, space: *space });
        *space = false;
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == '~' {
            space = true;
            i += 1;
            continue;
        }
        if c == '\\' {
            let Some(&next) = chars.get(i + 1) else {
                break;
            };
            if next == '\\' {
                push(out, Tok::RowSep, &mut space);
                i += 2;
                continue;
            }
            if !next.is_ascii_alphabetic() {
                i += 2;
                match next {
                    '{' => {
                        depth += 1;
                        push(out, Tok::SetOpen, &mut space);
                    }
                    '}' => {
                        depth -= 1;
                        push(out, Tok::SetClose, &mut space);
                    }
                    '%' => push(out, Tok::Percent, &mut space),
                    '|' => push(out, Tok::Sym('|'), &mut space),
                    // \, \; \: \  \$ \# \& and the like: spacing or text symbols.
                    _ => space = true,
                }
                continue;
            }
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_alphabetic() {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            i = j;
            match name.as_str() {
                "left" | "right" | "big" | "Big" | "bigg" | "Bigg" | "bigl" | "bigr" | "Bigl"
                | "Bigr" | "biggl" | "biggr" | "middle" => {
                    if chars.get(i) == Some(&'.') {
                        i += 1;
                    }
                }
                "displaystyle" | "textstyle" | "scriptstyle" | "quad" | "qquad" | "limits"
                | "nolimits" | "hfill" | "boxed" | "fbox" | "noindent" | "phantom" => space = true,
                "text" | "textbf" | "textit" | "textnormal" | "mbox" | "textrm" | "texttt"
                | "emph" | "textsf" | "textup" | "hbox" => {
                    if let Some((content, after)) = braced(chars, i) {
                        i = after;
                        let content = content.trim().to_string();
                        if !content.is_empty() {
                            push(out, Tok::Text(content), &mut space);
                        }
                    }
                }
                "operatorname" => {
                    if let Some((content, after)) = braced(chars, i) {
                        i = after;
                        push(out, Tok::Cmd(content.trim().to_string()), &mut space);
                    }
                }
                "mathrm" | "mathbf" | "mathit" | "boldsymbol" | "mathsf" | "mathcal" | "bm"
                | "mathbb" | "vec" | "overline" | "hat" | "widehat" | "bar" | "overrightarrow"
                | "tilde" | "mathtt" => {
                    if let Some((content, after)) = braced(chars, i) {
                        i = after;
                        let inner: Vec<char> = content.chars().collect();
                        let before = out.len();
                        lex_into(&inner, out);
                        if let Some(first) = out.get_mut(before) {
                            first.space = space;
                        }
                        space = false;
                    }
                }
                "begin" | "end" => {
                    if let Some((env, after)) = braced(chars, i) {
                        i = after;
                        let env = env.trim().trim_end_matches('*').to_string();
                        if name == "begin" {
                            if env == "array"
                                && let Some((_, after)) = braced(chars, i)
                            {
                                i = after;
                            }
                            push(out, Tok::Begin(env), &mut space);
                        } else {
                            push(out, Tok::End(env), &mut space);
                        }
                    }
                }
                "dfrac" | "tfrac" | "cfrac" => push(out, Tok::Cmd("frac".into()), &mut space),
                "le" | "leq" | "leqslant" | "leqq" => push(out, Tok::Le, &mut space),
                "ge" | "geq" | "geqslant" | "geqq" => push(out, Tok::Ge, &mut space),
                "ne" | "neq" => push(out, Tok::Ne, &mut space),
                "lt" => push(out, Tok::Sym('<'), &mut space),
                "gt" => push(out, Tok::Sym('>'), &mut space),
                "cdot" | "times" | "ast" => push(out, Tok::Sym('*'), &mut space),
                "div" => push(out, Tok::Sym('/'), &mut space),
                "lbrace" => {
                    depth += 1;
                    push(out, Tok::SetOpen, &mut space)
                }
                "rbrace" => {
                    depth -= 1;
                    push(out, Tok::SetClose, &mut space)
                }
                "vert" | "lvert" | "rvert" | "mid" => push(out, Tok::Sym('|'), &mut space),
                "colon" => push(out, Tok::Sym(':'), &mut space),
                "degree" => push(out, Tok::Cmd("circ".into()), &mut space),
                "percent" => push(out, Tok::Percent, &mut space),
                "ldots" | "cdots" | "dotsc" | "dotsb" => {
                    push(out, Tok::Cmd("dots".into()), &mut space)
                }
                n if GREEK.contains(&n) => push(out, Tok::Var(name), &mut space),
                _ => push(out, Tok::Cmd(name), &mut space),
            }
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let (num, after) = number(chars, i, depth == 0);
            i = after;
            push(out, Tok::Num(num), &mut space);
            continue;
        }
        if c.is_ascii_alphabetic() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_alphabetic() {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            i = j;
            let tok = if word.len() == 1 {
                Tok::Var(word)
            } else {
                Tok::Word(word)
            };
            push(out, tok, &mut space);
            continue;
        }
        i += 1;
        let tok = match c {
            '<' if chars.get(i) == Some(&'=') => {
                i += 1;
                Tok::Le
            }
            '>' if chars.get(i) == Some(&'=') => {
                i += 1;
                Tok::Ge
            }
            '!' if chars.get(i) == Some(&'=') => {
                i += 1;
                Tok::Ne
            }
            '(' | '[' => {
                depth += 1;
                Tok::Sym(c)
            }
            ')' | ']' => {
                depth -= 1;
                Tok::Sym(c)
            }
            '+' | '-' | '*' | '/' | '^' | '_' | '{' | '}' | ',' | ';' | ':' | '=' | '<' | '>'
            | '|' | '!' | '&' | '?' => Tok::Sym(c),
            '%' => Tok::Percent,
            '−' | '–' => Tok::Sym('-'),
            '×' | '·' | '⋅' => Tok::Sym('*'),
            '÷' => Tok::Sym('/'),
            '≤' => Tok::Le,
            '≥' => Tok::Ge,
            '≠' => Tok::Ne,
            '±' => Tok::Cmd("pm".into()),
            'π' => Tok::Cmd("pi".into()),
            '∞' => Tok::Cmd("infty".into()),
            '√' => Tok::Cmd("sqrt".into()),
            '°' => Tok::Cmd("circ".into()),
            '∪' => Tok::Cmd("cup".into()),
            '∈' => Tok::Cmd("in".into()),
            '²' | '³' => {
                push(out, Tok::Sym('^'), &mut space);
                Tok::Num(if c == '²' { "2" } else { "3" }.into())
            }
            // '$', quotes, periods, currency signs and anything else: not part of the value.
            _ => {
                space = true;
                continue;
            }
        };
        push(out, tok, &mut space);
    }
}

/// A number at `chars[i]`; `groups`: whether `,ddd` / ` ddd` groups may join it (outside brackets).
fn number(chars: &[char], mut i: usize, groups: bool) -> (String, usize) {
    let digits = |i: usize| {
        let mut j = i;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let mut out = String::new();
    let start = i;
    let end = digits(i);
    out.extend(&chars[start..end]);
    i = end;
    let first_group = end - start;
    if groups && (1..=3).contains(&first_group) && chars[start] != '0' {
        // 1,000,000 or 1 000 000: every later group exactly three digits, one separator kind.
        let mut sep: Option<char> = None;
        while let Some(&c) = chars.get(i) {
            if !(c == ',' || c == ' ') || sep.is_some_and(|s| s != c) {
                break;
            }
            let group_end = digits(i + 1);
            if group_end - (i + 1) != 3 {
                break;
            }
            sep = Some(c);
            out.extend(&chars[i + 1..group_end]);
            i = group_end;
        }
    }
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
        let end = digits(i + 1);
        if out.is_empty() {
            out.push('0');
        }
        out.push('.');
        out.extend(&chars[i + 1..end]);
        i = end;
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn thousands_join_outside_brackets_only() {
        assert_eq!(toks("7,425,000"), vec![Tok::Num("7425000".into())]);
        assert_eq!(toks("1 000"), vec![Tok::Num("1000".into())]);
        assert_eq!(
            toks("11,\\! 111,\\! 100"),
            vec![Tok::Num("11111100".into())]
        );
        assert_eq!(toks("14{,}916"), vec![Tok::Num("14916".into())]);
        assert_eq!(
            toks("32, 349"),
            vec![Tok::Num("32".into()), Tok::Sym(','), Tok::Num("349".into())]
        );
        assert_eq!(
            toks("(1,100)"),
            vec![
                Tok::Sym('('),
                Tok::Num("1".into()),
                Tok::Sym(','),
                Tok::Num("100".into()),
                Tok::Sym(')')
            ]
        );
        assert_eq!(toks(".4"), vec![Tok::Num("0.4".into())]);
    }

    #[test]
    fn doubled_backslashes_before_commands_collapse_but_row_breaks_stay() {
        assert_eq!(
            collapse_double_backslashes("\\\\dfrac{1}{2}"),
            "\\dfrac{1}{2}"
        );
        assert_eq!(collapse_double_backslashes("1\\\\2"), "1\\\\2");
        assert_eq!(
            collapse_double_backslashes("0\\\\\\end{x}"),
            "0\\\\\\end{x}"
        );
    }
}
