//! Synthetic reasoning tasks with real traces, which small models learn from scratch on a CPU:
//! multi-digit addition (the column-by-column work, then the sum) makes "does training work?"
//! testable in minutes; counting (a running count over a list, one line per item) is a task whose
//! answer needs all of its thinking, so cutting thinking short costs accuracy (s1's effect).

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

/// Rows asking how many `a`s a list of `max_items / 2 ..= max_items` letters from `a b c` holds;
/// the thinking walks the list keeping the count ("b 0", "a 1", …), the answer is the count.
pub fn counting(max_items: usize, n: usize, seed: u64) -> Vec<ExampleFields> {
    let mut rng = Rng::new(seed);
    let min_items = (max_items / 2).max(1);
    (0..n)
        .map(|_| {
            let len = min_items + rng.below(max_items - min_items + 1);
            let letters: Vec<char> = (0..len).map(|_| ['a', 'b', 'c'][rng.below(3)]).collect();
            counting_row(&letters)
        })
        .collect()
}

pub fn counting_row(letters: &[char]) -> ExampleFields {
    let mut count = 0;
    let lines: Vec<String> = letters
        .iter()
        .map(|&c| {
            count += usize::from(c == 'a');
            format!("{c} {count}")
        })
        .collect();
    let list: Vec<String> = letters.iter().map(char::to_string).collect();
    ExampleFields {
        question: format!("How many a are in: {}?", list.join(" ")),
        thinking: lines.join("\n"),
        answer: count.to_string(),
        source: "synthetic".into(),
        domain: "counting".into(),
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

    #[test]
    fn counting_keeps_a_running_count() {
        let row = counting_row(&['b', 'a', 'c', 'a']);
        assert_eq!(row.question, "How many a are in: b a c a?");
        assert_eq!(row.thinking, "b 0\na 1\nc 1\na 2");
        assert_eq!(row.answer, "2");
        let rows = counting(12, 100, 3);
        assert!(
            rows.iter()
                .all(|r| (6..=12).contains(&r.thinking.lines().count()))
        );
        assert_eq!(rows, counting(12, 100, 3));
    }
}
