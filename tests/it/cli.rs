//! `still import` and `still export` as scripts use them: the real binary on a data directory.

use std::process::Command;

use still_tests::{count_lines, still_bin, test_data};

fn still(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(still_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("still runs")
}

#[test]
fn import_prints_a_summary_and_export_writes_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let math = test_data("math500/test.jsonl");
    let out = still(
        dir.path(),
        &["import", math.to_str().unwrap(), "--dataset", "math500"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "test.jsonl: 500 rows imported into 'math500', 0 rejected (format jsonl, preset math)"
    );

    let listed = still(dir.path(), &["datasets"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("math500\t500 rows"));

    let exported = dir.path().join("out.jsonl");
    let out = still(
        dir.path(),
        &[
            "export",
            "--dataset",
            "math500",
            "--out",
            exported.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_lines(&exported), 500);

    // STILL_DATA_DIR means the same as --data-dir.
    let out = Command::new(still_bin())
        .env("STILL_DATA_DIR", dir.path())
        .arg("datasets")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("math500"));
}

#[test]
fn import_failures_exit_non_zero_with_the_row_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"q\", \"answer\": \"a\"}\nnot json\n{\"question\": \"r\", \"answer\": \"b\"}\n").unwrap();

    // Skipping (the default): exit 0, the bad row listed in the one-line summary.
    let out = still(
        dir.path(),
        &["import", bad.to_str().unwrap(), "--dataset", "lenient"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 rows imported into 'lenient', 1 rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("record 2 (line 2): invalid JSON"),
        "{stdout}"
    );

    // Rejecting: non-zero, nothing stored.
    let out = still(
        dir.path(),
        &[
            "import",
            bad.to_str().unwrap(),
            "--dataset",
            "strict",
            "--policy",
            "reject",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.jsonl record 2 (line 2): invalid JSON"),
        "{stderr}"
    );
    let listed = String::from_utf8_lossy(&still(dir.path(), &["datasets"]).stdout).into_owned();
    assert!(!listed.contains("strict"), "{listed}");

    let out = still(
        dir.path(),
        &["import", "/no/such/file.jsonl", "--dataset", "x"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.jsonl: no such file"));
}

/// The pids of processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn local_workers_exit_when_their_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = std::process::Command::new(still_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--no-demo", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The local worker runs with its work dir under the data dir.
    let needle = dir.path().join("worker-1").to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut workers = Vec::new();
    while workers.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        workers = pids_with(&needle);
    }
    assert_eq!(workers.len(), 1, "one local worker started");
    // Its token is readable by its owner only and is not on its command line (which `ps`
    // shows every user of the machine).
    let token_file = dir.path().join("local-worker-1.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", workers[0])).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(token.trim()),
        "the token is on the worker's command line"
    );
    // SIGKILL: the server cannot stop its children; they must notice and go.
    serve.kill().unwrap();
    serve.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pids_with(&needle).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = pids_with(&needle);
    assert!(left.is_empty(), "worker processes left behind: {left:?}");
}

#[test]
fn serving_on_a_non_loopback_address_warns_that_there_are_no_accounts() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = std::process::Command::new(still_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--no-demo", "--local-workers", "0"])
        .args(["--addr", &format!("0.0.0.0:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(serve.stderr.take().unwrap());
    let warning = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("warning: serving on"));
    serve.kill().unwrap();
    serve.wait().unwrap();
    let warning = warning.expect("a warning line");
    assert!(warning.contains("not a loopback address"), "{warning}");
    assert!(warning.contains("no accounts"), "{warning}");
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn grade_checks_outputs_made_elsewhere_by_id_or_in_line_order() {
    let dir = tempfile::tempdir().unwrap();
    // GSM8K test in line order: each worked answer as the model's output, every 10th replaced
    // by a wrong one.
    let gsm8k = test_data("gsm8k/test.jsonl");
    let rows = jsonl(&gsm8k);
    let predictions = dir.path().join("gsm8k-pred.jsonl");
    let mut text = String::new();
    for (i, row) in rows.iter().enumerate() {
        let output = if i % 10 == 0 {
            "I think the answer is 123456789.".to_string()
        } else {
            row["answer"].as_str().unwrap().to_string()
        };
        text.push_str(&serde_json::json!({ "output": output }).to_string());
        text.push('\n');
    }
    std::fs::write(&predictions, text).unwrap();
    let out = still(
        dir.path(),
        &[
            "grade",
            "--data",
            gsm8k.to_str().unwrap(),
            "--predictions",
            predictions.to_str().unwrap(),
            "--preset",
            "gsm8k",
        ],
    );
    let wrong = rows.len().div_ceil(10);
    let right = rows.len() - wrong;
    let stdout = stdout_of(&out);
    assert!(
        stdout.starts_with(&format!(
            "accuracy {:.4} ({right}/1319)",
            right as f64 / 1319.0
        )),
        "{stdout}"
    );
    let graded = jsonl(&dir.path().join("gsm8k-pred.graded.jsonl"));
    assert_eq!(graded.len(), 1319);
    assert_eq!(graded[0]["correct"], false);
    assert_eq!(graded[0]["extracted"], "123456789");
    assert_eq!(graded[1]["correct"], true);
    assert_eq!(graded[1]["reason"], "#### line: written as the reference");

    // MATH-500 by id, in reverse order: each solution as the output.
    let math = test_data("math500/test.jsonl");
    let rows = jsonl(&math);
    let predictions = dir.path().join("math-pred.jsonl");
    let text: String = rows
        .iter()
        .rev()
        .map(|r| {
            serde_json::json!({ "id": r["unique_id"], "output": r["solution"] }).to_string() + "\n"
        })
        .collect();
    std::fs::write(&predictions, text).unwrap();
    let out_file = dir.path().join("math.graded.jsonl");
    let out = still(
        dir.path(),
        &[
            "grade",
            "--data",
            math.to_str().unwrap(),
            "--predictions",
            predictions.to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(stdout_of(&out).starts_with("accuracy 1.0000 (500/500)"));
    let graded = jsonl(&out_file);
    assert_eq!(graded[0]["id"], rows[499]["unique_id"]);

    // An id the data does not have: the line is named and nothing is claimed.
    std::fs::write(
        &predictions,
        "{\"id\": \"test/precalculus/807.json\", \"output\": \"x\"}\n{\"id\": \"nope\", \"output\": \"1\"}\n",
    )
    .unwrap();
    let out = still(
        dir.path(),
        &[
            "grade",
            "--data",
            math.to_str().unwrap(),
            "--predictions",
            predictions.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("math-pred.jsonl line 2") && stderr.contains("\"nope\""),
        "{stderr}"
    );
}

#[test]
fn eval_prints_the_per_budget_table_and_generate_forces_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("add.jsonl");
    stdout_of(&still(
        dir.path(),
        &[
            "synth",
            "--digits",
            "2",
            "--n",
            "40",
            "--out",
            data.to_str().unwrap(),
        ],
    ));
    let model = dir.path().join("tiny");
    stdout_of(&still(
        dir.path(),
        &[
            "model",
            "new",
            "--tokenizer-from",
            data.to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            model.to_str().unwrap(),
        ],
    ));
    let out_file = dir.path().join("eval.jsonl");
    let stdout = stdout_of(&still(
        dir.path(),
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--max-thinking",
            "4,8",
            "--wait",
            "0,1",
            "--limit",
            "3",
            "--max-answer-tokens",
            "6",
            "--out",
            out_file.to_str().unwrap(),
        ],
    ));
    for label in [
        "max 4 · wait 0",
        "max 4 · wait 1",
        "max 8 · wait 0",
        "max 8 · wait 1",
    ] {
        assert!(stdout.contains(label), "{stdout}");
    }
    assert!(stdout.contains("Control 1.000"), "{stdout}");
    assert!(stdout.contains("Performance"), "{stdout}");
    let records = jsonl(&out_file);
    assert_eq!(records.len(), 12);
    for r in &records {
        let budget = r["budget"].as_u64().unwrap();
        let max = if budget < 2 { 4 } else { 8 };
        assert!(
            r["thought"]["thinking_tokens"].as_u64().unwrap() <= max,
            "{r}"
        );
    }

    let stdout = stdout_of(&still(
        dir.path(),
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "What is 12 + 34?",
            "--max-thinking",
            "5",
            "--min-thinking",
            "5",
            "--max-answer-tokens",
            "4",
        ],
    ));
    assert!(stdout.starts_with("── thinking: "), "{stdout}");
    assert!(stdout.contains("cut at"), "{stdout}");
    assert!(stdout.contains("── answer: "), "{stdout}");
    assert!(stdout.contains("Final Answer:"), "{stdout}");
}

/// `still token create` prints a token once; a running server accepts it on `/v1`, and after
/// `still token revoke` refuses it, as OpenAI does an unknown key (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_made_on_the_command_line_opens_v1_until_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let out = still(dir.path(), &["token", "create", "--name", "scripts"]);
    let line = stdout_of(&out);
    // "token <id> 'scripts': sta_…"
    let token = line.split_whitespace().last().unwrap().to_string();
    let id = line.split_whitespace().nth(1).unwrap().to_string();
    assert!(token.starts_with("sta_") && token.len() > 40, "{line}");
    for file in ["still.db", "still.db-wal"] {
        let stored = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&stored).contains(&token),
            "the token itself is stored in {file}"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Command::new(still_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--no-demo", "--local-workers", "0"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let models = |token: String| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/v1/models"))
                .bearer_auth(token)
                .send()
                .await
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        match models(token.clone()).await {
            Ok(answer) => break answer,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("the server never answered: {e}"),
        }
    };
    assert_eq!(answer.status(), 200);
    let list: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let wrong = models("sta_not-a-token".into()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let revoked = still(dir.path(), &["token", "revoke", "--id", &id]);
    assert!(stdout_of(&revoked).contains("revoked"));
    let after = models(token.clone()).await.unwrap();
    assert_eq!(after.status(), 401);
    let error: serde_json::Value = after.json().await.unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    // Revoking it again names the problem.
    let again = still(dir.path(), &["token", "revoke", "--id", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("id {id}")));
    serve.kill().unwrap();
    serve.wait().unwrap();
}
