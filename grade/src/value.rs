//! Numeric values of expressions, with every name given a value drawn for the point: two
//! expressions are the same function when they agree at several random points.

use crate::parse::Node;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Scalar(f64),
    Matrix(Vec<Vec<f64>>),
}

/// The value a name takes at evaluation point `point`: deterministic, in (0.5, 3.0), different
/// for every name and point (so `x` and `y` never coincide by accident).
fn name_value(name: &str, index: Option<f64>, point: u64) -> f64 {
    // FNV-1a then splitmix64: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if let Some(index) = index {
        h ^= ((index * 1e6).round() as i64) as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ point.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    0.5 + 2.5 * ((z >> 11) as f64 / (1u64 << 53) as f64)
}

pub fn has_names(node: &Node) -> bool {
    let mut found = false;
    visit(node, &mut |n| {
        found |= matches!(n, Node::Var(_) | Node::Sub(..))
    });
    found
}

fn visit(node: &Node, f: &mut impl FnMut(&Node)) {
    f(node);
    match node {
        Node::Neg(a) | Node::Func(_, a) | Node::Abs(a) | Node::Fact(a) | Node::Percent(a) => {
            visit(a, f)
        }
        Node::Sub(_, a) => visit(a, f),
        Node::Div(a, b) | Node::Pow(a, b) | Node::Root(a, b) | Node::Pm(a, b) => {
            visit(a, f);
            visit(b, f);
        }
        Node::Rel(a, _, b) => {
            visit(a, f);
            visit(b, f);
        }
        Node::Add(v)
        | Node::Mul(v)
        | Node::Tuple(v)
        | Node::List(v)
        | Node::Set(v)
        | Node::Ratio(v)
        | Node::Union(v)
        | Node::Chain(v, _) => v.iter().for_each(|n| visit(n, f)),
        Node::Interval { lo, hi, .. } => {
            visit(lo, f);
            visit(hi, f);
        }
        Node::Matrix(rows) => rows.iter().flatten().for_each(|n| visit(n, f)),
        Node::Num(_) | Node::Var(_) | Node::Pi | Node::Inf | Node::Text(_) => {}
    }
}

fn scalar(node: &Node, point: u64) -> Option<f64> {
    match eval(node, point)? {
        Val::Scalar(x) => Some(x),
        Val::Matrix(_) => None,
    }
}

/// The value at `point`; `None` where it is undefined or not a number (a tuple, text, …).
pub fn eval(node: &Node, point: u64) -> Option<Val> {
    use Val::*;
    Some(match node {
        Node::Num(x) => Scalar(*x),
        Node::Var(name) => Scalar(name_value(name, None, point)),
        Node::Sub(name, index) => Scalar(name_value(name, Some(scalar(index, point)?), point)),
        Node::Pi => Scalar(std::f64::consts::PI),
        Node::Inf => Scalar(f64::INFINITY),
        Node::Percent(x) => eval(x, point)?,
        Node::Neg(x) => match eval(x, point)? {
            Scalar(x) => Scalar(-x),
            Matrix(m) => Matrix(map(&m, |x| -x)),
        },
        Node::Add(parts) => {
            let mut total = eval(&parts[0], point)?;
            for p in &parts[1..] {
                total = match (total, eval(p, point)?) {
                    (Scalar(a), Scalar(b)) => Scalar(a + b),
                    (Matrix(a), Matrix(b)) if same_shape(&a, &b) => Matrix(
                        a.iter()
                            .zip(&b)
                            .map(|(r, s)| r.iter().zip(s).map(|(x, y)| x + y).collect())
                            .collect(),
                    ),
                    _ => return None,
                };
            }
            total
        }
        Node::Mul(parts) => {
            let mut total = eval(&parts[0], point)?;
            for p in &parts[1..] {
                total = multiply(total, eval(p, point)?)?;
            }
            total
        }
        Node::Div(a, b) => match (eval(a, point)?, scalar(b, point)?) {
            (_, 0.0) => return None,
            (Scalar(n), d) => Scalar(n / d),
            (Matrix(m), d) => Matrix(map(&m, |x| x / d)),
        },
        Node::Pow(a, b) => {
            let (base, exp) = (scalar(a, point)?, scalar(b, point)?);
            Scalar(power(base, exp)?)
        }
        Node::Root(index, x) => {
            let (n, x) = (scalar(index, point)?, scalar(x, point)?);
            if n == 0.0 {
                return None;
            }
            Scalar(power(x, 1.0 / n).or_else(|| {
                // An odd root of a negative number: -(|x|^(1/n)).
                (n.fract() == 0.0 && (n as i64) % 2 != 0).then(|| -(-x).powf(1.0 / n))
            })?)
        }
        Node::Abs(x) => Scalar(scalar(x, point)?.abs()),
        Node::Fact(x) => {
            let n = scalar(x, point)?;
            if n < 0.0 || n.fract() != 0.0 || n > 170.0 {
                return None;
            }
            Scalar((1..=n as u64).map(|k| k as f64).product())
        }
        Node::Func(name, x) => {
            let x = scalar(x, point)?;
            Scalar(match name.as_str() {
                "sin" => x.sin(),
                "cos" => x.cos(),
                "tan" => x.tan(),
                "sec" => 1.0 / x.cos(),
                "csc" => 1.0 / x.sin(),
                "cot" => 1.0 / x.tan(),
                "arcsin" => x.asin(),
                "arccos" => x.acos(),
                "arctan" => x.atan(),
                "sinh" => x.sinh(),
                "cosh" => x.cosh(),
                "tanh" => x.tanh(),
                "ln" => x.ln(),
                "log" | "lg" => x.log10(),
                "exp" => x.exp(),
                _ => return None,
            })
        }
        Node::Matrix(rows) => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut values = Vec::with_capacity(row.len());
                for cell in row {
                    values.push(scalar(cell, point)?);
                }
                out.push(values);
            }
            Matrix(out)
        }
        _ => return None,
    })
    .filter(|v| match v {
        Scalar(x) => !x.is_nan(),
        Matrix(m) => m.iter().flatten().all(|x| x.is_finite()),
    })
}

fn power(base: f64, exp: f64) -> Option<f64> {
    let v = base.powf(exp);
    (!v.is_nan()).then_some(v)
}

fn same_shape(a: &[Vec<f64>], b: &[Vec<f64>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(r, s)| r.len() == s.len())
}

fn map(m: &[Vec<f64>], f: impl Fn(f64) -> f64) -> Vec<Vec<f64>> {
    m.iter()
        .map(|r| r.iter().map(|x| f(*x)).collect())
        .collect()
}

fn multiply(a: Val, b: Val) -> Option<Val> {
    use Val::*;
    Some(match (a, b) {
        (Scalar(a), Scalar(b)) => Scalar(a * b),
        (Scalar(s), Matrix(m)) | (Matrix(m), Scalar(s)) => Matrix(map(&m, |x| x * s)),
        (Matrix(a), Matrix(b)) => {
            let inner = b.len();
            if a.iter().any(|r| r.len() != inner) || inner == 0 {
                return None;
            }
            let cols = b[0].len();
            Matrix(
                a.iter()
                    .map(|r| {
                        (0..cols)
                            .map(|j| (0..inner).map(|k| r[k] * b[k][j]).sum())
                            .collect()
                    })
                    .collect(),
            )
        }
    })
}

/// Two numbers agree: equal infinities, or within a relative 1e-9 (absolute near zero).
pub fn close(a: f64, b: f64) -> bool {
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

pub fn vals_close(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Scalar(a), Val::Scalar(b)) => close(*a, *b),
        (Val::Matrix(a), Val::Matrix(b)) => {
            same_shape(a, b)
                && a.iter()
                    .flatten()
                    .zip(b.iter().flatten())
                    .all(|(x, y)| close(*x, *y))
        }
        _ => false,
    }
}

/// How many random points expressions with names are compared at.
pub const POINTS: u64 = 6;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Mode, parse};

    fn value(s: &str) -> f64 {
        match eval(&parse(s, Mode::Math).expect("parses"), 0) {
            Some(Val::Scalar(x)) => x,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn values_of_latex() {
        assert!(close(value("\\frac{1}{3}"), 1.0 / 3.0));
        assert!(close(value("\\sqrt[3]{8}"), 2.0));
        assert!(close(value("\\sqrt[3]{-8}"), -2.0));
        assert!(close(value("2^{10}"), 1024.0));
        assert!(close(value("5!"), 120.0));
        assert!(close(
            value("\\frac{9}{4}\\pi"),
            2.25 * std::f64::consts::PI
        ));
        assert!(close(value("-3^2"), -9.0));
        assert!(close(value("\\log_2 8"), 3.0));
    }
}
