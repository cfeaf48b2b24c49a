//! Whether a candidate answer equals a reference: structure first (relations, intervals, tuples,
//! sets, lists), then values (at random points where names occur).
//!
//! The relation is not symmetric: a candidate `… = v` is read as its value `v` (a worked chain
//! ending in the answer), while a reference `a + 3z = 0` is an equation and only an equal
//! equation matches it; a reference `x = v` with a name on the left is matched by `v`.

use crate::parse::{Node, RelOp};
use crate::value::{self, POINTS, Val};

/// A name, a product or ratio of names, a function of a name (`f(x)`), `|AB|`, `(p, q)`:
/// the left side of an assignment rather than of an equation.
pub fn name_like(node: &Node) -> bool {
    match node {
        Node::Var(_) | Node::Sub(..) => true,
        Node::Mul(v) | Node::Tuple(v) | Node::Ratio(v) => v.iter().all(name_like),
        Node::Div(a, b) => name_like(a) && name_like(b),
        Node::Abs(a) => name_like(a),
        _ => false,
    }
}

fn is_expr(node: &Node) -> bool {
    matches!(
        node,
        Node::Num(_)
            | Node::Var(_)
            | Node::Pi
            | Node::Inf
            | Node::Neg(_)
            | Node::Add(_)
            | Node::Mul(_)
            | Node::Div(..)
            | Node::Pow(..)
            | Node::Func(..)
            | Node::Root(..)
            | Node::Abs(_)
            | Node::Fact(_)
            | Node::Sub(..)
            | Node::Percent(_)
            | Node::Matrix(_)
            | Node::Pm(..)
    )
}

fn norm_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

pub fn equivalent(reference: &Node, candidate: &Node) -> bool {
    use Node::*;
    match (reference, candidate) {
        (Text(a), Text(b)) => norm_text(a) == norm_text(b),
        (Text(a), Var(b)) | (Var(b), Text(a)) => norm_text(a) == b.to_lowercase(),
        (Rel(..), Rel(..)) => relations_equivalent(reference, candidate),
        (Rel(lhs, RelOp::Eq, rhs), _) if name_like(lhs) => equivalent(rhs, candidate),
        (_, Rel(_, RelOp::Eq, rhs)) => equivalent(reference, rhs),
        (Chain(a, ops_a), Chain(b, ops_b)) => ops_a == ops_b && ordered(a, b),
        (
            Interval {
                lo: a0,
                hi: a1,
                lo_closed: ca0,
                hi_closed: ca1,
            },
            Interval {
                lo: b0,
                hi: b1,
                lo_closed: cb0,
                hi_closed: cb1,
            },
        ) => ca0 == cb0 && ca1 == cb1 && equivalent(a0, b0) && equivalent(a1, b1),
        (
            Tuple(v),
            Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
        )
        | (
            Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
            Tuple(v),
        ) if v.len() == 2 => equivalent(&v[0], lo) && equivalent(&v[1], hi),
        (Union(a), Union(b)) => unordered(a, b),
        (Set(a), Set(b) | List(b) | Tuple(b)) | (List(a) | Tuple(a), Set(b)) => unordered(a, b),
        (Set(a), _) if a.len() == 1 => equivalent(&a[0], candidate),
        (_, Set(b)) if b.len() == 1 => equivalent(reference, &b[0]),
        (List(a), List(b)) => unordered(a, b),
        (Tuple(a), Tuple(b) | List(b)) | (List(a), Tuple(b)) | (Ratio(a), Ratio(b)) => {
            ordered(a, b)
        }
        _ if contains_pm(reference) || contains_pm(candidate) => {
            let a = flatten(reference);
            let b = flatten(candidate);
            if a.len() == 1 && b.len() == 1 {
                values_equivalent(&a[0], &b[0])
            } else {
                unordered(&a, &b)
            }
        }
        _ if is_expr(reference) && is_expr(candidate) => values_equivalent(reference, candidate),
        _ => false,
    }
}

fn ordered(a: &[Node], b: &[Node]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equivalent(x, y))
}

/// The same items in any order (each matched once); `±` items count as both values.
fn unordered(a: &[Node], b: &[Node]) -> bool {
    let a: Vec<Node> = a.iter().flat_map(flatten).collect();
    let b: Vec<Node> = b.iter().flat_map(flatten).collect();
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let found = (0..b.len()).find(|&j| !used[j] && equivalent(x, &b[j]));
        if let Some(j) = found {
            used[j] = true;
        }
        found.is_some()
    })
}

fn contains_pm(node: &Node) -> bool {
    match node {
        Node::Pm(..) => true,
        Node::Neg(a) | Node::Func(_, a) | Node::Abs(a) | Node::Percent(a) => contains_pm(a),
        Node::Div(a, b) | Node::Pow(a, b) | Node::Root(a, b) => contains_pm(a) || contains_pm(b),
        Node::Add(v) | Node::Mul(v) => v.iter().any(contains_pm),
        _ => false,
    }
}

/// A list's or set's items, each `±` expanded into its two values.
fn flatten(node: &Node) -> Vec<Node> {
    match node {
        Node::List(v) | Node::Set(v) => v.iter().flat_map(flatten).collect(),
        other => expand_pm(other),
    }
}

/// Every value an expression with `±` takes (at most 16).
fn expand_pm(node: &Node) -> Vec<Node> {
    fn combine(parts: &[Node], build: impl Fn(Vec<Node>) -> Node) -> Vec<Node> {
        let mut out: Vec<Vec<Node>> = vec![Vec::new()];
        for part in parts {
            let options = expand_pm(part);
            out = out
                .iter()
                .flat_map(|prefix| {
                    options.iter().map(move |o| {
                        let mut v = prefix.clone();
                        v.push(o.clone());
                        v
                    })
                })
                .take(16)
                .collect();
        }
        out.into_iter().map(build).collect()
    }
    fn pair(a: &Node, b: &Node, build: impl Fn(Node, Node) -> Node) -> Vec<Node> {
        combine(&[a.clone(), b.clone()], |mut v| {
            let y = v.pop().expect("two");
            let x = v.pop().expect("two");
            build(x, y)
        })
    }
    if !contains_pm(node) {
        return vec![node.clone()];
    }
    match node {
        Node::Pm(a, b) => {
            let mut out = pair(a, b, |x, y| Node::Add(vec![x, y]));
            out.extend(pair(a, b, |x, y| {
                Node::Add(vec![x, Node::Neg(Box::new(y))])
            }));
            out
        }
        Node::Neg(a) => expand_pm(a)
            .into_iter()
            .map(|x| Node::Neg(Box::new(x)))
            .collect(),
        Node::Abs(a) => expand_pm(a)
            .into_iter()
            .map(|x| Node::Abs(Box::new(x)))
            .collect(),
        Node::Percent(a) => expand_pm(a)
            .into_iter()
            .map(|x| Node::Percent(Box::new(x)))
            .collect(),
        Node::Func(f, a) => expand_pm(a)
            .into_iter()
            .map(|x| Node::Func(f.clone(), Box::new(x)))
            .collect(),
        Node::Div(a, b) => pair(a, b, |x, y| Node::Div(Box::new(x), Box::new(y))),
        Node::Pow(a, b) => pair(a, b, |x, y| Node::Pow(Box::new(x), Box::new(y))),
        Node::Root(a, b) => pair(a, b, |x, y| Node::Root(Box::new(x), Box::new(y))),
        Node::Add(v) => combine(v, Node::Add),
        Node::Mul(v) => combine(v, Node::Mul),
        other => vec![other.clone()],
    }
}

/// `10\%` matches 10 and 0.1: a percentage's number is compared as written and divided by 100.
fn values_equivalent(reference: &Node, candidate: &Node) -> bool {
    let (r, r_pct) = strip_percent(reference);
    let (c, c_pct) = strip_percent(candidate);
    let mut scales = vec![(1.0, 1.0)];
    if r_pct {
        scales.push((0.01, 1.0));
    }
    if c_pct {
        scales.push((1.0, 0.01));
    }
    scales.into_iter().any(|(sr, sc)| same_values(r, c, sr, sc))
}

fn strip_percent(node: &Node) -> (&Node, bool) {
    match node {
        Node::Percent(inner) => (inner, true),
        other => (other, false),
    }
}

fn scale(v: Val, s: f64) -> Val {
    match v {
        Val::Scalar(x) => Val::Scalar(x * s),
        Val::Matrix(m) => Val::Matrix(
            m.into_iter()
                .map(|r| r.into_iter().map(|x| x * s).collect())
                .collect(),
        ),
    }
}

fn same_values(a: &Node, b: &Node, sa: f64, sb: f64) -> bool {
    let named = value::has_names(a) || value::has_names(b);
    let points = if named { POINTS } else { 1 };
    let mut agreed = 0;
    for point in 0..points {
        let (Some(x), Some(y)) = (value::eval(a, point), value::eval(b, point)) else {
            continue;
        };
        if !value::vals_close(&scale(x, sa), &scale(y, sb)) {
            return false;
        }
        agreed += 1;
    }
    agreed >= if named { 3 } else { 1 }
}

/// `a > b` as `b < a`, `a >= b` as `b <= a`.
fn oriented(node: &Node) -> Option<(&Node, RelOp, &Node)> {
    let Node::Rel(l, op, r) = node else {
        return None;
    };
    Some(match op {
        RelOp::Gt => (r, RelOp::Lt, l),
        RelOp::Ge => (r, RelOp::Le, l),
        op => (l, *op, r),
    })
}

/// Equal left sides and equivalent right sides; or, for expressions, `lhs - rhs` proportional
/// (any non-zero factor for `=` and `≠`, a positive one for inequalities).
fn relations_equivalent(reference: &Node, candidate: &Node) -> bool {
    let (Some((l1, o1, r1)), Some((l2, o2, r2))) = (oriented(reference), oriented(candidate))
    else {
        return false;
    };
    if o1 != o2 {
        return false;
    }
    if l1 == l2 && equivalent(r1, r2) {
        return true;
    }
    if ![l1, r1, l2, r2]
        .iter()
        .all(|n| is_expr(n) && !contains_pm(n))
    {
        return false;
    }
    let difference =
        |l: &Node, r: &Node| Node::Add(vec![l.clone(), Node::Neg(Box::new(r.clone()))]);
    proportional(
        &difference(l1, r1),
        &difference(l2, r2),
        matches!(o1, RelOp::Lt | RelOp::Le),
    )
}

fn proportional(a: &Node, b: &Node, positive: bool) -> bool {
    let mut ratio: Option<f64> = None;
    let mut seen = 0;
    for point in 0..POINTS {
        let (Some(Val::Scalar(x)), Some(Val::Scalar(y))) =
            (value::eval(a, point), value::eval(b, point))
        else {
            continue;
        };
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        let (zx, zy) = (x.abs() < 1e-12, y.abs() < 1e-12);
        if zx && zy {
            seen += 1;
            continue;
        }
        if zx || zy {
            return false;
        }
        let q = x / y;
        match ratio {
            None => ratio = Some(q),
            Some(r) if !value::close(q, r) => return false,
            Some(_) => {}
        }
        seen += 1;
    }
    seen >= 3 && ratio.is_none_or(|r| !positive || r > 0.0)
}
