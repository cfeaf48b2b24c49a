//! Two evals side by side: the questions both graded, matched by their text (so evals of
//! different models, or of different versions of a dataset, line up), and which flipped from
//! right to wrong or wrong to right.

use std::collections::HashMap;

use still_api::{EvalFlips, Flip, MAX_FLIPS};

use super::store::Graded;

/// The flips from `a` to `b`. A question that occurs several times pairs its occurrences in
/// order; questions only one eval graded are left out.
pub fn flips(a: &[Graded], b: &[Graded]) -> Flips {
    let mut by_question: HashMap<&str, Vec<&Graded>> = HashMap::new();
    for g in b.iter().rev() {
        by_question.entry(&g.question).or_default().push(g);
    }
    let mut out = Flips::default();
    for x in a {
        let Some(y) = by_question.get_mut(x.question.as_str()).and_then(Vec::pop) else {
            continue;
        };
        out.shared += 1;
        let flip = || Flip {
            question: x.question.clone(),
            reference: x.reference.clone(),
            a_example: x.example_index,
            b_example: y.example_index,
            a_extracted: x.extracted.clone(),
            b_extracted: y.extracted.clone(),
        };
        match (x.correct, y.correct) {
            (true, true) => out.both_right += 1,
            (false, false) => out.both_wrong += 1,
            (true, false) => {
                out.n_right_to_wrong += 1;
                if out.right_to_wrong.len() < MAX_FLIPS {
                    out.right_to_wrong.push(flip());
                }
            }
            (false, true) => {
                out.n_wrong_to_right += 1;
                if out.wrong_to_right.len() < MAX_FLIPS {
                    out.wrong_to_right.push(flip());
                }
            }
        }
    }
    out
}

/// [`flips`]' counts and lists, before the evals' ids and budgets are added.
#[derive(Debug, Default)]
pub struct Flips {
    pub shared: i64,
    pub both_right: i64,
    pub both_wrong: i64,
    pub n_right_to_wrong: i64,
    pub n_wrong_to_right: i64,
    pub right_to_wrong: Vec<Flip>,
    pub wrong_to_right: Vec<Flip>,
}

impl Flips {
    pub fn between(self, (a, budget_a): (i64, i64), (b, budget_b): (i64, i64)) -> EvalFlips {
        EvalFlips {
            a,
            b,
            budget_a,
            budget_b,
            shared: self.shared,
            both_right: self.both_right,
            both_wrong: self.both_wrong,
            n_right_to_wrong: self.n_right_to_wrong,
            n_wrong_to_right: self.n_wrong_to_right,
            right_to_wrong: self.right_to_wrong,
            wrong_to_right: self.wrong_to_right,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graded(index: i64, question: &str, correct: bool) -> Graded {
        Graded {
            example_index: index,
            correct,
            question: question.into(),
            reference: format!("ref {question}"),
            extracted: Some(format!("{index}")),
        }
    }

    #[test]
    fn questions_are_matched_by_text_and_counted_by_direction() {
        let a = [
            graded(0, "q1", true),
            graded(1, "q2", true),
            graded(2, "q3", false),
            graded(3, "q4", false),
            graded(4, "only in a", true),
            graded(5, "twice", true),
            graded(6, "twice", false),
        ];
        // b holds them in another order (another version of the dataset).
        let b = [
            graded(0, "twice", false),
            graded(1, "q4", true),
            graded(2, "q3", false),
            graded(3, "q2", false),
            graded(4, "q1", true),
            graded(5, "twice", true),
            graded(6, "only in b", true),
        ];
        let f = flips(&a, &b);
        assert_eq!(f.shared, 6);
        assert_eq!((f.both_right, f.both_wrong), (1, 1));
        assert_eq!((f.n_right_to_wrong, f.n_wrong_to_right), (2, 2));
        let r2w: Vec<(&str, i64, i64)> = f
            .right_to_wrong
            .iter()
            .map(|x| (x.question.as_str(), x.a_example, x.b_example))
            .collect();
        // The first "twice" of a pairs with the first of b.
        assert_eq!(r2w, [("q2", 1, 3), ("twice", 5, 0)]);
        let w2r: Vec<&str> = f
            .wrong_to_right
            .iter()
            .map(|x| x.question.as_str())
            .collect();
        assert_eq!(w2r, ["q4", "twice"]);
        assert_eq!(f.right_to_wrong[0].b_extracted.as_deref(), Some("3"));
    }
}
