//! The checker on real data: every MATH-500 reference against its own solution's last box,
//! every GSM8K test label against its `####` line, the LIMO traces' answers, a table of tricky
//! pairs (tests/answer_pairs.tsv, each with its source), and the 251 cases five public graders
//! assert in their own test suites (tests/data/grader-cases).

use std::path::PathBuf;

use still_grade::{Preset, equivalent, grade, last_boxed};

fn data(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(relative)
}

fn rows(relative: &str) -> Vec<serde_json::Value> {
    let path = data(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

fn field<'a>(row: &'a serde_json::Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {row}"))
}

#[test]
fn every_math500_reference_matches_the_last_box_of_its_solution() {
    let rows = rows("math500/test.jsonl");
    assert_eq!(rows.len(), 500);
    let mut missed = Vec::new();
    for row in &rows {
        let answer = field(row, "answer");
        let solution = field(row, "solution");
        let boxed = last_boxed(solution).expect("every MATH-500 solution has a box");
        let whole = grade(answer, solution, Preset::Math);
        if !equivalent(answer, boxed) || !whole.correct {
            missed.push(format!(
                "{}: {answer} vs {boxed} ({})",
                field(row, "unique_id"),
                whole.reason
            ));
        }
    }
    println!(
        "MATH-500: {}/500 references match their own solution",
        500 - missed.len()
    );
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn every_gsm8k_test_label_matches_its_own_worked_answer() {
    let rows = rows("gsm8k/test.jsonl");
    assert_eq!(rows.len(), 1319);
    let mut right = 0;
    for row in &rows {
        let answer = field(row, "answer");
        let label = answer.rsplit("#### ").next().expect("a #### line").trim();
        let verdict = grade(label, answer, Preset::Gsm8k);
        assert!(verdict.correct, "{label}: {verdict:?}");
        assert_eq!(verdict.extracted.as_deref(), Some(label));
        right += 1;
        // The label is not accepted for a different number.
        assert!(!equivalent(label, &format!("{label}1")), "{label}");
    }
    println!("GSM8K test: {right}/1319 labels match their #### line");
}

#[test]
fn the_limo_traces_state_their_gold_answers() {
    let rows = rows("traces/limo_deepseek-r1-distill-qwen-32b.jsonl");
    assert_eq!(rows.len(), 291);
    for row in &rows {
        let gold = field(row, "gold_answer");
        let verdict = grade(gold, field(row, "solution"), Preset::Math);
        assert!(verdict.correct, "id {}: {gold} vs {verdict:?}", row["id"]);
    }
}

#[test]
fn tricky_pairs_match_or_differ_as_their_table_says() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/answer_pairs.tsv");
    let text = std::fs::read_to_string(&path).expect("the pairs table");
    let mut n = 0;
    let mut wrong = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "line {}: four tab-separated fields", i + 1);
        let expected = match cols[0] {
            "match" => true,
            "differ" => false,
            other => panic!("line {}: {other}", i + 1),
        };
        n += 1;
        if equivalent(cols[1], cols[2]) != expected {
            wrong.push(format!(
                "line {}: {} | {} | {} ({})",
                i + 1,
                cols[0],
                cols[1],
                cols[2],
                cols[3]
            ));
        }
    }
    println!("tricky pairs: {}/{n} as the table says", n - wrong.len());
    assert!(n >= 150, "the table has {n} pairs");
    assert!(wrong.is_empty(), "{}:\n{}", wrong.len(), wrong.join("\n"));
}

/// Cases the checker decides against the source's assertion, and why we keep that decision.
const REJECTED: &[(&str, &str)] = &[(
    "mathverify-test_yujianll-L20",
    "a sum with symbolic bounds (\\sum_{k=0}^{n-1}) is not evaluated, so F_k F_{n-k-1} and \
     F_{n-k-1} F_k are compared as text; Math-Verify asks sympy to commute the product",
)];

#[test]
fn the_public_graders_cases_agree_except_where_we_say_why() {
    let rows = rows("grader-cases/cases.jsonl");
    assert_eq!(rows.len(), 251);
    let mut disagree = Vec::new();
    let mut per_kind: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for row in &rows {
        let kind = field(row, "kind");
        let reference = field(row, "reference");
        let candidate = field(row, "candidate");
        let expected = row["expected"].as_bool().expect("expected");
        let (got, detail) = match kind {
            "equiv" => (equivalent(reference, candidate), String::new()),
            "extract" => {
                let v = grade(reference, candidate, Preset::Math);
                (
                    v.correct,
                    format!(" [found {:?}: {}]", v.extracted, v.reason),
                )
            }
            other => panic!("kind {other}"),
        };
        let source = field(row, "source")
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        let entry = per_kind.entry(format!("{kind} {source}")).or_default();
        entry.1 += 1;
        if got == expected {
            entry.0 += 1;
        } else {
            disagree.push((
                field(row, "id").to_string(),
                format!(
                    "{}: expected {expected}, ref {reference:?}, cand {:?}{detail}",
                    field(row, "id"),
                    candidate
                        .chars()
                        .rev()
                        .take(160)
                        .collect::<String>()
                        .chars()
                        .rev()
                        .collect::<String>()
                ),
            ));
        }
    }
    for (kind, (agree, total)) in &per_kind {
        println!("{kind}: {agree}/{total}");
    }
    let unexplained: Vec<&String> = disagree
        .iter()
        .filter(|(id, _)| !REJECTED.iter().any(|(r, _)| r == id))
        .map(|(_, d)| d)
        .collect();
    let stale: Vec<&str> = REJECTED
        .iter()
        .filter(|(r, _)| !disagree.iter().any(|(id, _)| id == r))
        .map(|(r, _)| *r)
        .collect();
    println!("agreement: {}/251", 251 - disagree.len());
    assert!(
        unexplained.is_empty(),
        "{} unexplained:\n{}",
        unexplained.len(),
        unexplained
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed as rejected but now agreeing: {stale:?}"
    );
}

#[test]
fn cut_off_outputs_never_panic_and_the_short_traces_grade_as_their_boxes_say() {
    // Budget-forced outputs are cut anywhere: every prefix must grade without a panic.
    let rows = rows("traces/limo_qwen2.5-32b-instruct.jsonl");
    assert_eq!(rows.len(), 491);
    let mut graded = 0;
    for row in rows.iter().take(60) {
        let solution = field(row, "solution");
        let gold = field(row, "gold_answer");
        for (at, _) in solution.char_indices().step_by(37) {
            grade(gold, &solution[..at], Preset::Math);
            graded += 1;
        }
    }
    assert!(graded > 1000, "{graded}");
    // The data's README counts 489 of 491 boxes equal to the gold answer as text. By value
    // only one differs: id 247 boxes 400 for 4 (id 70 boxes 160^\circ for 160, and AIME's
    // 063 is 63).
    let wrong: Vec<i64> = rows
        .iter()
        .filter(|r| !grade(field(r, "gold_answer"), field(r, "solution"), Preset::Math).correct)
        .map(|r| r["id"].as_i64().expect("an id"))
        .collect();
    println!(
        "LIMO short traces: {}/491 graded correct",
        491 - wrong.len()
    );
    assert_eq!(wrong, vec![247]);
}
