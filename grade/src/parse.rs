//! Tokens to an answer's structure: numbers and expressions, relations, intervals and unions,
//! tuples, sets and lists, matrices, text. Anything it cannot read is `None`, never a guess.

use crate::lex::{Tok, Token, lex};

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(f64),
    Var(String),
    Pi,
    Inf,
    Text(String),
    Neg(Box<Node>),
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Div(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Func(String, Box<Node>),
    /// (index, radicand)
    Root(Box<Node>, Box<Node>),
    Abs(Box<Node>),
    Fact(Box<Node>),
    /// `x_1`, `F_{n-k}`: an unknown function of its index.
    Sub(String, Box<Node>),
    /// `a ± b`
    Pm(Box<Node>, Box<Node>),
    Percent(Box<Node>),
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Set(Vec<Node>),
    Ratio(Vec<Node>),
    Interval {
        lo: Box<Node>,
        hi: Box<Node>,
        lo_closed: bool,
        hi_closed: bool,
    },
    Union(Vec<Node>),
    Matrix(Vec<Vec<Node>>),
    Rel(Box<Node>, RelOp, Box<Node>),
    /// `a < b < c` that is not an interval of a name.
    Chain(Vec<Node>, Vec<RelOp>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

const FUNCTIONS: &[&str] = &[
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "ln", "exp", "lg",
];

/// How the text was found: inside math (`$…$`, `\boxed{}`) words may be products of names; in
/// prose a word other than a connector or a trailing unit means the text is not an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Math,
    Prose,
}

pub fn parse(text: &str, mode: Mode) -> Option<Node> {
    let mut tokens = lex(text);
    while matches!(
        tokens.last().map(|t| &t.tok),
        Some(Tok::Sym(',' | ';' | ':'))
    ) {
        tokens.pop();
    }
    if tokens.is_empty() {
        return None;
    }
    if let Some(text) = all_text(&tokens) {
        return Some(Node::Text(text));
    }
    let mut p = Parser {
        toks: tokens,
        pos: 0,
        mode,
    };
    let node = p.top()?;
    (p.pos == p.toks.len()).then_some(node)
}

/// Words and `\text{}` only (at least one of them more than a letter): a text answer.
fn all_text(tokens: &[Token]) -> Option<String> {
    let mut parts = Vec::new();
    let mut long = false;
    for t in tokens {
        match &t.tok {
            Tok::Word(w) => {
                long = true;
                parts.push(w.clone());
            }
            Tok::Text(w) => {
                long |= w.chars().filter(|c| c.is_alphanumeric()).count() > 0;
                parts.push(w.clone());
            }
            Tok::Var(v) => parts.push(v.clone()),
            Tok::Sym('(' | ')' | '.' | ',') => {}
            _ => return None,
        }
    }
    long.then(|| parts.join(" "))
}

fn is_connector(tok: &Tok) -> bool {
    match tok {
        Tok::Word(w) | Tok::Text(w) => {
            matches!(
                w.to_ascii_lowercase().as_str(),
                "and" | "or" | "," | "and," | ", and"
            )
        }
        _ => false,
    }
}

fn is_percent_word(tok: &Tok) -> bool {
    matches!(tok, Tok::Word(w) if matches!(w.as_str(), "percent" | "pct" | "percentage"))
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    mode: Mode,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_token(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_sym(&mut self, c: char) -> bool {
        self.eat(&Tok::Sym(c))
    }

    /// `;`-separated groups of `,`-separated items; a group of `name = value` items is a tuple.
    fn top(&mut self) -> Option<Node> {
        let mut groups = vec![self.list()?];
        while self.eat_sym(';') {
            groups.push(self.list()?);
        }
        if groups.len() == 1 {
            return groups.pop();
        }
        Some(Node::List(
            groups.into_iter().map(assignments_to_tuple).collect(),
        ))
    }

    /// Items separated by `,`, "and", "or"; trailing unit words after an item are dropped.
    fn list(&mut self) -> Option<Node> {
        let mut items = vec![self.item()?];
        loop {
            self.skip_units();
            let mut separated = false;
            while self.peek() == Some(&Tok::Sym(',')) || self.peek().is_some_and(is_connector) {
                self.pos += 1;
                separated = true;
            }
            if !separated || self.at_list_end() {
                break;
            }
            items.push(self.item()?);
        }
        Some(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::List(items)
        })
    }

    fn at_list_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some(Tok::Sym(')' | ']' | '}' | ';') | Tok::SetClose)
        )
    }

    /// Words (units) and `\text{}` after a value, with a power (`\mbox{ cm}^2`).
    fn skip_units(&mut self) {
        while let Some(tok) = self.peek() {
            let unit = match tok {
                Tok::Word(_) | Tok::Text(_) => !is_connector(tok),
                Tok::Cmd(c) => c == "circ",
                _ => false,
            };
            if !unit {
                break;
            }
            self.pos += 1;
            if self.peek() == Some(&Tok::Sym('^'))
                && let Some(Tok::Num(_)) = self.toks.get(self.pos + 1).map(|t| &t.tok)
            {
                self.pos += 2;
            }
        }
    }

    /// A relation chain: `x = 3`, `5 \geq x`, `-2 \le x \le 7`, `x \in [a, b]`.
    fn item(&mut self) -> Option<Node> {
        let mut operands = vec![self.ratio()?];
        let mut ops: Vec<Option<RelOp>> = Vec::new(); // None: \approx
        loop {
            let op = match self.peek() {
                Some(Tok::Sym('=')) => Some(Some(RelOp::Eq)),
                Some(Tok::Sym('<')) => Some(Some(RelOp::Lt)),
                Some(Tok::Sym('>')) => Some(Some(RelOp::Gt)),
                Some(Tok::Le) => Some(Some(RelOp::Le)),
                Some(Tok::Ge) => Some(Some(RelOp::Ge)),
                Some(Tok::Ne) => Some(Some(RelOp::Ne)),
                Some(Tok::Cmd(c)) if c == "approx" || c == "simeq" => Some(None),
                Some(Tok::Cmd(c)) if c == "in" => {
                    // `x \in S`: the answer is S.
                    self.pos += 1;
                    return self.item();
                }
                _ => None,
            };
            let Some(op) = op else { break };
            self.pos += 1;
            ops.push(op);
            operands.push(self.ratio()?);
        }
        // `= … \approx …`: what follows an approximation is not the answer.
        if let Some(cut) = ops.iter().position(Option::is_none)
            && ops[..cut].contains(&Some(RelOp::Eq))
        {
            ops.truncate(cut);
            operands.truncate(cut + 1);
        }
        let ops: Vec<RelOp> = ops.into_iter().map(|o| o.unwrap_or(RelOp::Eq)).collect();
        match ops.len() {
            0 => operands.pop(),
            1 => {
                let rhs = operands.pop().expect("two operands");
                let lhs = operands.pop().expect("two operands");
                Some(Node::Rel(Box::new(lhs), ops[0], Box::new(rhs)))
            }
            _ if ops.iter().all(|o| *o == RelOp::Eq) => {
                let last = operands.pop().expect("operands");
                let first = operands.swap_remove(0);
                Some(Node::Rel(Box::new(first), RelOp::Eq, Box::new(last)))
            }
            2 => Some(double_inequality(operands, ops)),
            _ => Some(Node::Chain(operands, ops)),
        }
    }

    fn ratio(&mut self) -> Option<Node> {
        let mut parts = vec![self.union()?];
        while self.eat_sym(':') {
            parts.push(self.union()?);
        }
        Some(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Node::Ratio(parts)
        })
    }

    fn union(&mut self) -> Option<Node> {
        let mut parts = vec![self.sum()?];
        while self.eat(&Tok::Cmd("cup".into())) {
            parts.push(self.sum()?);
        }
        Some(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Node::Union(parts)
        })
    }

    fn sum(&mut self) -> Option<Node> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Tok::Sym('+')) => {
                    self.pos += 1;
                    parts.push(self.term()?);
                }
                Some(Tok::Sym('-')) => {
                    self.pos += 1;
                    parts.push(Node::Neg(Box::new(self.term()?)));
                }
                Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                    self.pos += 1;
                    let rest = self.sum()?;
                    return Some(Node::Pm(Box::new(add(parts)), Box::new(rest)));
                }
                _ => break,
            }
        }
        Some(add(parts))
    }

    fn unary(&mut self) -> Option<Node> {
        match self.peek() {
            Some(Tok::Sym('-')) => {
                self.pos += 1;
                Some(Node::Neg(Box::new(self.unary()?)))
            }
            Some(Tok::Sym('+')) => {
                self.pos += 1;
                self.unary()
            }
            Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                self.pos += 1;
                Some(Node::Pm(Box::new(Node::Num(0.0)), Box::new(self.term()?)))
            }
            _ => self.term(),
        }
    }

    fn term(&mut self) -> Option<Node> {
        let mut node = self.power()?;
        // `1\frac{4}{5}`, `137 \frac{1}{2}`: a whole number before a fraction of whole numbers
        // is a mixed number.
        if let Node::Num(whole) = node
            && whole.fract() == 0.0
            && self.peek() == Some(&Tok::Cmd("frac".into()))
        {
            let fraction = self.power()?;
            let whole_parts = matches!(&fraction, Node::Div(a, b)
                    if matches!((&**a, &**b), (Node::Num(x), Node::Num(y))
                        if x.fract() == 0.0 && y.fract() == 0.0));
            node = if whole_parts {
                Node::Add(vec![Node::Num(whole), fraction])
            } else {
                mul(Node::Num(whole), fraction)
            };
        }
        loop {
            match self.peek() {
                Some(Tok::Sym('*')) => {
                    self.pos += 1;
                    let rhs = self.signed_power()?;
                    node = mul(node, rhs);
                }
                Some(Tok::Sym('/')) => {
                    self.pos += 1;
                    let rhs = self.signed_power()?;
                    node = Node::Div(Box::new(node), Box::new(rhs));
                }
                _ if self.starts_implicit_factor() => {
                    let rhs = self.power()?;
                    node = mul(node, rhs);
                }
                _ => break,
            }
        }
        Some(node)
    }

    fn signed_power(&mut self) -> Option<Node> {
        if self.eat_sym('-') {
            return Some(Node::Neg(Box::new(self.power()?)));
        }
        self.power()
    }

    /// `2x`, `2\sqrt3`, `(x-2)(x+2)`, `\frac34 i`; not a number after a value, not a spaced word.
    fn starts_implicit_factor(&self) -> bool {
        let Some(token) = self.peek_token() else {
            return false;
        };
        match &token.tok {
            Tok::Var(_) | Tok::Begin(_) => true,
            Tok::Sym('(') | Tok::Sym('{') => true,
            Tok::Word(w) => {
                self.mode == Mode::Math
                    && !token.space
                    && !is_percent_word(&token.tok)
                    && w != "and"
                    && w != "or"
            }
            Tok::Cmd(c) => {
                matches!(c.as_str(), "frac" | "sqrt" | "pi" | "infty")
                    || FUNCTIONS.contains(&c.as_str())
            }
            _ => false,
        }
    }

    fn power(&mut self) -> Option<Node> {
        let base = self.postfix()?;
        if !self.eat_sym('^') {
            return Some(base);
        }
        if self.eat(&Tok::Cmd("circ".into())) {
            return Some(base);
        }
        if self.peek() == Some(&Tok::Sym('{'))
            && self.toks.get(self.pos + 1).map(|t| &t.tok) == Some(&Tok::Cmd("circ".into()))
        {
            self.pos += 2;
            return self.eat_sym('}').then_some(base);
        }
        let exponent = self.exponent()?;
        Some(Node::Pow(Box::new(base), Box::new(exponent)))
    }

    fn exponent(&mut self) -> Option<Node> {
        if self.eat_sym('-') {
            return Some(Node::Neg(Box::new(self.exponent()?)));
        }
        self.argument()
    }

    fn postfix(&mut self) -> Option<Node> {
        let mut node = self.primary()?;
        loop {
            match self.peek() {
                Some(Tok::Sym('!')) => {
                    self.pos += 1;
                    node = Node::Fact(Box::new(node));
                }
                Some(Tok::Sym('_')) => {
                    self.pos += 1;
                    let index = self.argument()?;
                    node = match (node, index) {
                        (Node::Num(n), Node::Num(base)) => Node::Num(in_base(n, base)?),
                        (Node::Var(name), index) => Node::Sub(name, Box::new(index)),
                        (Node::Mul(letters), index) => Node::Sub(
                            letters
                                .iter()
                                .map(|l| match l {
                                    Node::Var(v) => v.as_str(),
                                    _ => "?",
                                })
                                .collect(),
                            Box::new(index),
                        ),
                        _ => return None,
                    };
                }
                Some(Tok::Percent) => {
                    self.pos += 1;
                    node = Node::Percent(Box::new(node));
                }
                Some(tok) if is_percent_word(tok) => {
                    self.pos += 1;
                    node = Node::Percent(Box::new(node));
                }
                Some(Tok::Sym('\'')) => self.pos += 1,
                _ => return Some(node),
            }
        }
    }

    /// One argument of `\frac`, `\sqrt`, `^`, `_`: a `{group}`, one digit of a number (`\frac34`),
    /// or one primary.
    fn argument(&mut self) -> Option<Node> {
        if self.eat_sym('{') {
            let inner = self.list()?;
            return self.eat_sym('}').then_some(inner);
        }
        if let Some(Tok::Num(digits)) = self.peek()
            && digits.len() > 1
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            let first = f64::from(digits.as_bytes()[0] - b'0');
            let rest = digits[1..].to_string();
            self.toks[self.pos].tok = Tok::Num(rest);
            self.toks[self.pos].space = false;
            return Some(Node::Num(first));
        }
        self.primary()
    }

    fn primary(&mut self) -> Option<Node> {
        let token = self.toks.get(self.pos)?.clone();
        self.pos += 1;
        match token.tok {
            Tok::Num(s) => s.parse().ok().map(Node::Num),
            Tok::Var(v) => Some(Node::Var(v)),
            Tok::Word(w) => {
                if FUNCTIONS.contains(&w.as_str()) {
                    return self.function(w);
                }
                if self.mode == Mode::Prose {
                    return None;
                }
                Some(Node::Mul(
                    w.chars().map(|c| Node::Var(c.to_string())).collect(),
                ))
            }
            Tok::Text(t) => Some(Node::Text(t)),
            Tok::Sym(open @ ('(' | '[')) => self.bracket(open),
            Tok::Sym('{') => {
                if self.eat_sym('}') {
                    return None;
                }
                let inner = self.list()?;
                self.eat_sym('}').then_some(inner)
            }
            Tok::SetOpen => {
                if self.eat(&Tok::SetClose) {
                    return Some(Node::Set(Vec::new()));
                }
                let inner = self.top()?;
                if !self.eat(&Tok::SetClose) {
                    return None;
                }
                Some(Node::Set(match inner {
                    Node::List(items) => items,
                    one => vec![one],
                }))
            }
            Tok::Sym('|') => {
                let inner = self.sum()?;
                self.eat_sym('|').then(|| Node::Abs(Box::new(inner)))
            }
            Tok::Begin(env) => self.matrix(&env),
            Tok::Cmd(c) => match c.as_str() {
                "frac" => {
                    let num = self.argument()?;
                    let den = self.argument()?;
                    Some(Node::Div(Box::new(num), Box::new(den)))
                }
                "sqrt" => {
                    let index = if self.eat_sym('[') {
                        let index = self.sum()?;
                        if !self.eat_sym(']') {
                            return None;
                        }
                        index
                    } else {
                        Node::Num(2.0)
                    };
                    let radicand = self.argument()?;
                    Some(Node::Root(Box::new(index), Box::new(radicand)))
                }
                "pi" => Some(Node::Pi),
                "infty" => Some(Node::Inf),
                f if FUNCTIONS.contains(&f) => self.function(c),
                _ => None,
            },
            _ => None,
        }
    }

    /// `\sin x`, `\sin(x)`, `\sin^2(y)`, `\log_2 8`.
    fn function(&mut self, name: String) -> Option<Node> {
        let mut base = None;
        let mut power = None;
        for _ in 0..2 {
            if self.eat_sym('^') {
                power = Some(self.exponent()?);
            } else if self.eat_sym('_') {
                base = Some(self.argument()?);
            }
        }
        let arg = self.power()?;
        let mut node = match base {
            Some(base) => Node::Div(
                Box::new(Node::Func("ln".into(), Box::new(arg))),
                Box::new(Node::Func("ln".into(), Box::new(base))),
            ),
            None => Node::Func(name, Box::new(arg)),
        };
        if let Some(power) = power {
            node = Node::Pow(Box::new(node), Box::new(power));
        }
        Some(node)
    }

    /// `(a)`, `(a, b)` (a tuple), `[a, b)` / `(a, b]` / `[a, b]` (intervals), `[a, b, c]`.
    fn bracket(&mut self, open: char) -> Option<Node> {
        let inner = self.top()?;
        let close = match self.peek() {
            Some(Tok::Sym(c @ (')' | ']'))) => *c,
            _ => return None,
        };
        self.pos += 1;
        let mut items = match inner {
            Node::List(items) => items,
            one => {
                return (open == '(' && close == ')' || open == '[' && close == ']').then_some(one);
            }
        };
        if items.len() == 2 && !(open == '(' && close == ')') {
            let hi = items.pop().expect("two");
            let lo = items.pop().expect("two");
            return Some(Node::Interval {
                lo: Box::new(lo),
                hi: Box::new(hi),
                lo_closed: open == '[',
                hi_closed: close == ']',
            });
        }
        (open == '(' && close == ')' || open == '[' && close == ']').then_some(Node::Tuple(items))
    }

    fn matrix(&mut self, env: &str) -> Option<Node> {
        if !matches!(
            env,
            "pmatrix" | "bmatrix" | "Bmatrix" | "matrix" | "array" | "smallmatrix"
        ) {
            return None;
        }
        let mut rows = Vec::new();
        loop {
            if self.eat(&Tok::End(env.to_string())) {
                break;
            }
            let mut row = vec![self.sum()?];
            while self.eat_sym('&') {
                row.push(self.sum()?);
            }
            rows.push(row);
            if self.eat(&Tok::RowSep) {
                continue;
            }
            if !self.eat(&Tok::End(env.to_string())) {
                return None;
            }
            break;
        }
        let width = rows.first()?.len();
        rows.iter()
            .all(|r| r.len() == width)
            .then_some(Node::Matrix(rows))
    }
}

fn add(mut parts: Vec<Node>) -> Node {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Node::Add(parts)
    }
}

fn mul(lhs: Node, rhs: Node) -> Node {
    match lhs {
        Node::Mul(mut factors) => {
            factors.push(rhs);
            Node::Mul(factors)
        }
        other => Node::Mul(vec![other, rhs]),
    }
}

/// `204_5`: the digits read in base 5 (when each digit is below the base).
fn in_base(digits: f64, base: f64) -> Option<f64> {
    if digits.fract() != 0.0 || base.fract() != 0.0 || !(2.0..=36.0).contains(&base) {
        return None;
    }
    let mut value = 0.0;
    for d in format!("{digits:.0}").bytes() {
        let d = f64::from(d - b'0');
        if d >= base {
            return None;
        }
        value = value * base + d;
    }
    Some(value)
}

/// `a < x < b` (x a name) is the interval; `a \le |z| \le b` the two intervals; others a chain.
fn double_inequality(mut operands: Vec<Node>, ops: Vec<RelOp>) -> Node {
    use RelOp::*;
    let ascending = ops.iter().all(|o| matches!(o, Lt | Le));
    let descending = ops.iter().all(|o| matches!(o, Gt | Ge));
    if (ascending || descending) && operands.len() == 3 {
        let (mut lo, mut lo_op, mut hi, mut hi_op) = (0, ops[0], 2, ops[1]);
        if descending {
            (lo, lo_op, hi, hi_op) = (2, ops[1], 0, ops[0]);
        }
        let middle = &operands[1];
        let closed = |op: RelOp| matches!(op, Le | Ge);
        if let Node::Abs(inner) = middle
            && crate::equiv::name_like(inner)
        {
            let a = operands[lo].clone();
            let b = operands[hi].clone();
            let neg = |n: &Node| Node::Neg(Box::new(n.clone()));
            return Node::Union(vec![
                Node::Interval {
                    lo: Box::new(neg(&b)),
                    hi: Box::new(neg(&a)),
                    lo_closed: closed(hi_op),
                    hi_closed: closed(lo_op),
                },
                Node::Interval {
                    lo: Box::new(a),
                    hi: Box::new(b),
                    lo_closed: closed(lo_op),
                    hi_closed: closed(hi_op),
                },
            ]);
        }
        if crate::equiv::name_like(middle) {
            let hi_node = operands.swap_remove(hi.max(lo));
            let lo_node = operands.swap_remove(hi.min(lo));
            let (lo_node, hi_node) = if lo < hi {
                (lo_node, hi_node)
            } else {
                (hi_node, lo_node)
            };
            return Node::Interval {
                lo: Box::new(lo_node),
                hi: Box::new(hi_node),
                lo_closed: closed(lo_op),
                hi_closed: closed(hi_op),
            };
        }
    }
    Node::Chain(operands, ops)
}

/// `p=5, q=2` (every item a name's value) is the tuple `(5, 2)`.
fn assignments_to_tuple(group: Node) -> Node {
    match group {
        Node::List(items)
            if items.iter().all(
                |i| matches!(i, Node::Rel(lhs, RelOp::Eq, _) if crate::equiv::name_like(lhs)),
            ) =>
        {
            Node::Tuple(
                items
                    .into_iter()
                    .map(|i| match i {
                        Node::Rel(_, _, rhs) => *rhs,
                        other => other,
                    })
                    .collect(),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        parse(s, Mode::Math).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn fractions_roots_and_implicit_products() {
        assert_eq!(
            p("\\frac34"),
            Node::Div(Box::new(Node::Num(3.0)), Box::new(Node::Num(4.0)))
        );
        assert!(matches!(p("2\\sqrt{2}"), Node::Mul(_)));
        assert!(matches!(p("\\sqrt[3]{8}"), Node::Root(_, _)));
        assert!(matches!(p("(x-2)(x+2)"), Node::Mul(_)));
        assert_eq!(p("204_5"), Node::Num(54.0));
    }

    #[test]
    fn structures() {
        assert!(matches!(
            p("[0, 9)"),
            Node::Interval {
                lo_closed: true,
                hi_closed: false,
                ..
            }
        ));
        assert!(matches!(p("(1, 2)"), Node::Tuple(_)));
        assert!(matches!(p("\\{1, 2\\}"), Node::Set(_)));
        assert!(matches!(p("1, 2, and 3"), Node::List(v) if v.len() == 3));
        assert!(matches!(p("-2 \\le x \\le 7"), Node::Interval { .. }));
        assert!(matches!(p("x \\in (0, 1) \\cup (2, 3)"), Node::Union(_)));
        assert!(matches!(
            p("\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}"),
            Node::Matrix(_)
        ));
        assert!(matches!(p("\\text{east}"), Node::Text(_)));
        assert!(matches!(p("p=5,q=2;p=7,q=2"), Node::List(v) if matches!(v[0], Node::Tuple(_))));
    }

    #[test]
    fn prose_words_are_not_products() {
        assert!(parse("Jane started 3 hours ago", Mode::Prose).is_none());
        assert_eq!(parse("125 miles", Mode::Prose), Some(Node::Num(125.0)));
    }
}
