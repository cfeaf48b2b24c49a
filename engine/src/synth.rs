//! A synthetic reasoning task with real traces: multi-digit addition whose `thinking` is the
//! column-by-column work and whose `answer` is the sum. Small models learn it from scratch on a
//! CPU, which makes "does training work?" testable in minutes.

use still_api::ExampleFields;

use crate::rng::Rng;

/// Rows of `a + b` with `digits`-digit operands, drawn from `seed`.
pub fn addition(digits: usize, n: usize, seed: u64) -> Vec<ExampleFields> {
    let mut rng = Rng::new(seed);
    let low = 10u64.pow(digits.saturating_sub(1) as u32);
    let high = 10u64.pow(digits as u32);
    (0..n)
        .map(|_| {
            let a = low + rng.next_u64() % (high - low);
            let b = low + rng.next_u64() % (high - low);
            addition_row(a, b)
        })
        .collect()
}

/// One row: the trace adds digits right to left with carries.
pub fn addition_row(a: u64, b: u64) -> ExampleFields {
    let (da, db): (Vec<u64>, Vec<u64>) = (digits_of(a), digits_of(b));
    let mut lines = Vec::new();
    let mut carry = 0;
    for i in 0..da.len().max(db.len()) {
        let (x, y) = (
            da.get(i).copied().unwrap_or(0),
            db.get(i).copied().unwrap_or(0),
        );
        let sum = x + y + carry;
        let line = if carry > 0 {
            format!(
                "{x} + {y} + {carry} = {sum}, write {} carry {}",
                sum % 10,
                sum / 10
            )
        } else {
            format!("{x} + {y} = {sum}, write {} carry {}", sum % 10, sum / 10)
        };
        lines.push(line);
        carry = sum / 10;
    }
    if carry > 0 {
        lines.push(format!("write the carry {carry}"));
    }
    lines.push(format!("so {a} + {b} = {}", a + b));
    ExampleFields {
        question: format!("What is {a} + {b}?"),
        thinking: lines.join("\n"),
        answer: (a + b).to_string(),
        source: "synthetic".into(),
        domain: "addition".into(),
        ..Default::default()
    }
}

fn digits_of(mut n: u64) -> Vec<u64> {
    let mut out = vec![n % 10];
    n /= 10;
    while n > 0 {
        out.push(n % 10);
        n /= 10;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_carry_correctly() {
        let row = addition_row(958, 67);
        assert_eq!(row.answer, "1025");
        assert_eq!(
            row.thinking,
            "8 + 7 = 15, write 5 carry 1\n5 + 6 + 1 = 12, write 2 carry 1\n9 + 0 + 1 = 10, write 0 carry 1\nwrite the carry 1\nso 958 + 67 = 1025"
        );
        let rows = addition(3, 50, 1);
        assert_eq!(rows.len(), 50);
        assert!(
            rows.iter()
                .all(|r| r.question.len() == "What is 123 + 456?".len())
        );
        assert_eq!(rows, addition(3, 50, 1));
    }
}
