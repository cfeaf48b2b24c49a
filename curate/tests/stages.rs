//! Each stage on crafted rows: every quality rule, MinHash at its threshold and not below,
//! decontamination against the real MATH-500 questions, and the diversity sampler's seed and
//! its 2^(−rank) law on a large pool.

use std::path::PathBuf;

use still_api::{DomainSource, ExampleFields, Field, KeywordDomain, NearDuplicates, QualityStage};
use still_curate::{Labels, Pool, PoolBuilder, decontam, diversity, minhash, quality};

fn row(question: &str, thinking: &str, answer: &str) -> ExampleFields {
    ExampleFields {
        question: question.into(),
        thinking: thinking.into(),
        answer: answer.into(),
        solution: None,
        source: String::new(),
        domain: String::new(),
        tags: Vec::new(),
        metadata: serde_json::json!({}),
    }
}

fn pool_of(rows: &[(ExampleFields, u32)], labels: Labels) -> Pool {
    let mut b = PoolBuilder::new(labels);
    for (r, n) in rows {
        b.push(r, *n);
    }
    b.finish()
}

fn all(pool: &Pool) -> Vec<u32> {
    (0..pool.rows.len() as u32).collect()
}

fn test_rows(relative: &str, field: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v[field].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn each_quality_rule_drops_its_rows_with_the_first_matching_reason() {
    let q = "How many positive divisors does the number 360 have in total?";
    let rows = vec![
        (row(q, "Factor 360 = 2^3 3^2 5.", "24"), 50), // 0 kept
        (row("What is 2+2?", "", "   "), 50),          // 1 missing answer
        (row("What is 3+3?", "Error code: 429 - rate limit", "6"), 50), // 2 API error
        (row("In ![fig](a.png), find x.", "x = 2", "2"), 50), // 3 image
        (
            row("[asy] draw(unitcircle); [/asy] Find the area.", "pi", "pi"),
            50,
        ), // 4 image
        (
            row(
                "p1. Find all primes p such that p+2 is prime.",
                "twin",
                "inf",
            ),
            50,
        ), // 5 numbering
        (row("Find 7 times 8.", "56", "56"), 3),       // 6 too short
        (row("Find 9 times 8.", "72", "72"), 5000),    // 7 too long
        (row(&format!("  {q}\n"), "again", "24"), 50), // 8 exact duplicate
        (
            row(
                "How many positive divisors does the number 360 have in all?",
                "x",
                "24",
            ),
            50,
        ), // 9 near
        (
            row(
                "What is the sum of the first ten odd numbers?",
                "1+3+...",
                "100",
            ),
            50,
        ), // 10 kept
    ];
    let pool = pool_of(&rows, Labels::default());
    let stage = QualityStage {
        required_fields: vec![Field::Question, Field::Answer],
        min_trace_tokens: Some(10),
        max_trace_tokens: Some(4096),
        near_duplicates: Some(NearDuplicates {
            threshold: 0.5,
            shingle_words: 2,
            num_perm: 128,
        }),
        ..QualityStage::default()
    };
    let out = quality::run(&stage, &pool, &all(&pool));
    assert_eq!(out.kept, vec![0, 10]);
    let got: Vec<(u32, &str)> = out.dropped.iter().map(|d| (d.row, d.rule)).collect();
    assert_eq!(
        got,
        vec![
            (1, quality::MISSING_FIELD),
            (2, quality::API_ERROR),
            (3, quality::IMAGE_REFERENCE),
            (4, quality::IMAGE_REFERENCE),
            (5, quality::NUMBERING_ARTIFACT),
            (6, quality::TRACE_TOO_SHORT),
            (7, quality::TRACE_TOO_LONG),
            (8, quality::EXACT_DUPLICATE),
            (9, quality::NEAR_DUPLICATE),
        ]
    );
    assert_eq!(out.dropped[0].detail, "answer is empty");
    assert_eq!(out.dropped[7].detail, "the same question as row 0");
    assert!(
        out.dropped[8]
            .detail
            .starts_with("a near-duplicate of row 0 (Jaccard "),
        "{}",
        out.dropped[8].detail
    );
    // A rule turned off keeps its rows.
    let lenient = QualityStage {
        api_errors: false,
        image_refs: false,
        ..stage.clone()
    };
    let out = quality::run(&lenient, &pool, &all(&pool));
    assert_eq!(out.kept, vec![0, 2, 3, 4, 10]);
    // The preview counts each rule on its own, and the stage's total.
    let (rules, removed) = quality::preview(&stage, &pool, &all(&pool));
    let count = |r: &str| rules.iter().find(|(x, _)| *x == r).map(|(_, n)| *n);
    assert_eq!(count(quality::IMAGE_REFERENCE), Some(2));
    assert_eq!(count(quality::EXACT_DUPLICATE), Some(1));
    assert_eq!(count(quality::TRACE_TOO_SHORT), Some(1));
    assert_eq!(removed, 9);
}

/// `n` distinct words no other call shares.
fn fresh_words(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}w{i}")).collect()
}

#[test]
fn minhash_finds_planted_near_duplicates_at_the_threshold_and_not_below() {
    // With one-word shingles a question's set is its words: 8 shared of 10 in all is Jaccard
    // exactly 0.8; 8 shared of 11 is 0.727.
    let mut rows = Vec::new();
    let mut at_threshold = Vec::new();
    let mut below = Vec::new();
    for p in 0..300 {
        let base = fresh_words(&format!("p{p}"), 8);
        rows.push((row(&base.join(" "), "t", "a"), 10));
        let mut at = base.clone();
        at.extend(fresh_words(&format!("p{p}x"), 2));
        at_threshold.push(rows.len() as u32);
        rows.push((row(&at.join(" "), "t", "a"), 10));
        let mut under = base.clone();
        under.extend(fresh_words(&format!("p{p}y"), 3));
        below.push(rows.len() as u32);
        rows.push((row(&under.join(" "), "t", "a"), 10));
    }
    let pool = pool_of(&rows, Labels::default());
    let cfg = NearDuplicates {
        threshold: 0.8,
        shingle_words: 1,
        num_perm: 128,
    };
    let found = minhash::near_duplicates(&pool, &all(&pool), &cfg);
    let dup_rows: Vec<u32> = found.iter().map(|d| d.row).collect();
    assert_eq!(
        dup_rows, at_threshold,
        "every pair at 0.8 is found, none below"
    );
    for d in &found {
        assert_eq!(d.of, d.row - 1);
        assert_eq!(d.jaccard, 0.8);
    }
    // Just under 8/11 the 0.727 rows are duplicates too (of their base).
    let lower = NearDuplicates {
        threshold: 8.0 / 11.0,
        ..cfg
    };
    let found = minhash::near_duplicates(&pool, &all(&pool), &lower);
    let mut expected: Vec<u32> = at_threshold.iter().chain(&below).copied().collect();
    expected.sort();
    assert_eq!(found.iter().map(|d| d.row).collect::<Vec<_>>(), expected);
    assert!(below.iter().all(|b| !at_threshold.contains(b)));
}

#[test]
fn decontamination_finds_planted_math500_overlaps_with_the_shared_ngrams() {
    let math = test_rows("math500/test.jsonl", "problem");
    let gsm8k = test_rows("gsm8k/test.jsonl", "question");
    let index = decontam::Index::new(
        vec![decontam::EvalSet {
            name: "math500".into(),
            questions: math.clone(),
        }],
        8,
    );
    let mut rows: Vec<(ExampleFields, u32)> = gsm8k[..200]
        .iter()
        .map(|q| (row(q, "t", "a"), 10))
        .collect();
    // Plant 12 consecutive words of five MATH-500 problems inside new questions: problems
    // whose opening 8-grams no other problem has, so the match names them alone.
    let words: Vec<Vec<String>> = math.iter().map(|m| still_curate::text::words(m)).collect();
    let unique = |m: usize| {
        words[m].len() >= 12
            && words[m][..12].windows(8).all(|g| {
                let g = format!(" {} ", g.join(" "));
                words
                    .iter()
                    .enumerate()
                    .all(|(j, w)| j == m || !format!(" {} ", w.join(" ")).contains(&g))
            })
    };
    let planted: Vec<usize> = [3usize, 77, 150, 321, 450]
        .into_iter()
        .map(|start| (start..math.len()).find(|&m| unique(m)).unwrap())
        .collect();
    let mut planted_rows = Vec::new();
    for (k, &m) in planted.iter().enumerate() {
        let span = words[m][..12].join(" ");
        let at = 20 + k * 30;
        planted_rows.push(at as u32);
        rows.insert(
            at,
            (
                row(
                    &format!("A warm-up first. {span}. Explain each step."),
                    "t",
                    "a",
                ),
                10,
            ),
        );
    }
    let pool = pool_of(&rows, Labels::default());
    let out = decontam::run(&index, &pool, &all(&pool));
    let dropped: Vec<u32> = out.dropped.iter().map(|d| d.row).collect();
    assert_eq!(dropped, planted_rows);
    for (d, m) in out.dropped.iter().zip(planted.iter().copied()) {
        assert!(
            d.detail
                .starts_with(&format!("shares 5 8-grams with math500 row {m}: \"")),
            "{}",
            d.detail
        );
    }
    let hit = index
        .check(&rows[planted_rows[0] as usize].0.question)
        .unwrap();
    assert_eq!(hit.shared.len(), 3);
    assert_eq!(hit.shared[0], words[planted[0]][..8].join(" "));
}

fn length_pool(domains: &[(&str, usize)]) -> Pool {
    let mut rows = Vec::new();
    for (d, n) in domains {
        for i in 0..*n {
            let mut r = row(&format!("{d} question {i}"), "t", "a");
            r.domain = d.to_string();
            // Distinct lengths, unsorted in row order.
            rows.push((r, ((i * 7919) % n + 1) as u32));
        }
    }
    pool_of(&rows, Labels::default())
}

#[test]
fn diversity_with_a_seed_picks_the_same_rows_and_keeps_the_seed_set() {
    let pool = length_pool(&[("algebra", 300), ("geometry", 40), ("number theory", 900)]);
    let input = all(&pool);
    let a = diversity::run(&pool, &input, 100, 7);
    let b = diversity::run(&pool, &input, 100, 7);
    assert_eq!(a, b);
    assert_eq!(a.kept.len(), 100);
    assert_eq!(a.dropped.len(), input.len() - 100);
    assert!(
        a.kept.windows(2).all(|w| w[0] < w[1]),
        "kept in source order"
    );
    let c = diversity::run(&pool, &input, 100, 8);
    assert_ne!(a.kept, c.kept);
    // More than the pool: everything.
    assert_eq!(diversity::run(&pool, &input, 5000, 1).kept, input);

    // Tagged rows are always kept.
    let mut rows = Vec::new();
    for i in 0..50 {
        let mut r = row(&format!("q{i}"), "t", "a");
        if i % 10 == 3 {
            r.tags = vec!["seed".into()];
        }
        rows.push((r, (i + 1) as u32));
    }
    let labels = Labels {
        domain: DomainSource::Keywords {
            domains: vec![KeywordDomain {
                domain: "one".into(),
                keywords: vec!["q1".into()],
            }],
            fallback: "other".into(),
        },
        keep_tag: Some("seed".into()),
    };
    let pool = pool_of(&rows, labels);
    assert_eq!(pool.domains, vec!["one", "other"]);
    let out = diversity::run(&pool, &all(&pool), 8, 3);
    assert_eq!(out.kept.len(), 8);
    for s in [3, 13, 23, 33, 43] {
        assert!(out.kept.contains(&s), "seed row {s} kept: {:?}", out.kept);
    }
}

#[test]
fn diversity_follows_two_to_the_minus_rank_within_a_domain_and_uniform_domains() {
    // One domain of 1,000 rows: the first pick's rank by trace length.
    let pool = length_pool(&[("all", 1000)]);
    let input = all(&pool);
    let mut by_length: Vec<u32> = input.clone();
    by_length.sort_by_key(|&r| std::cmp::Reverse(pool.rows[r as usize].trace_tokens));
    let trials = 10_000u64;
    let mut ranks = [0u64; 8];
    for seed in 0..trials {
        let out = diversity::run(&pool, &input, 1, seed);
        let rank = by_length.iter().position(|&r| r == out.kept[0]).unwrap();
        if rank < ranks.len() {
            ranks[rank] += 1;
        }
    }
    for (k, &n) in ranks.iter().enumerate().take(6) {
        let p = 0.5f64.powi(k as i32 + 1);
        let expected = p * trials as f64;
        let sigma = (trials as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (n as f64 - expected).abs() < 4.0 * sigma,
            "rank {k}: {n} picks, expected {expected:.0} ± {sigma:.0}"
        );
    }
    // Domains of very different sizes get the same share of a small target.
    let pool = length_pool(&[("a", 20), ("b", 200), ("c", 2000), ("d", 6000)]);
    let input = all(&pool);
    let mut per_domain = [0u64; 4];
    let runs = 500u64;
    for seed in 0..runs {
        for r in diversity::run(&pool, &input, 16, seed).kept {
            per_domain[pool.rows[r as usize].domain as usize] += 1;
        }
    }
    for (d, &n) in per_domain.iter().enumerate() {
        let mean = n as f64 / runs as f64;
        assert!(
            (mean - 4.0).abs() < 0.25,
            "domain {d}: {mean} rows per run, expected 4"
        );
    }
}
