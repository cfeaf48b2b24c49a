//! Metric points: stored once per (run, name, step), and rolled up as they arrive into buckets
//! of 64, 512 and 4,096 steps (count, smallest and largest value with their steps), so a
//! downsampled curve of a run of any length reads a few thousand rows, not every point.

use std::collections::BTreeMap;

use sqlx::{SqliteConnection, SqlitePool};
use still_api::MetricPoint;

use crate::error::Result;

/// Bucket widths in steps, narrowest first.
pub const WIDTHS: [i64; 3] = [64, 512, 4096];

/// Rows per multi-row statement (SQLite allows 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 2_000;

/// Stores points, keeping an existing (run, name, step) as it is; returns the points that were
/// new. One statement per 2,000 points, so a batch holds the write lock briefly.
pub async fn insert(
    db: &mut SqliteConnection,
    run: i64,
    points: &[MetricPoint],
) -> Result<Vec<MetricPoint>> {
    let mut fresh = Vec::with_capacity(points.len());
    for chunk in points.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT OR IGNORE INTO run_metrics (run_id, name, step, value) ",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(run)
                .push_bind(&p.name)
                .push_bind(p.step)
                .push_bind(p.value);
        });
        q.push(" RETURNING name, step, value");
        let rows: Vec<(String, i64, f64)> = q.build_query_as().fetch_all(&mut *db).await?;
        fresh.extend(
            rows.into_iter()
                .map(|(name, step, value)| MetricPoint { step, name, value }),
        );
    }
    Ok(fresh)
}

/// One bucket's summary of newly stored points.
struct Rollup {
    n: i64,
    min: (i64, f64),
    max: (i64, f64),
}

/// Adds newly stored points (never a point stored before: that would count it twice) to the
/// rollups, in the caller's transaction.
pub async fn roll_up(db: &mut SqliteConnection, run: i64, points: &[MetricPoint]) -> Result<()> {
    let mut groups: BTreeMap<(&str, i64, i64), Rollup> = BTreeMap::new();
    for p in points {
        for width in WIDTHS {
            groups
                .entry((p.name.as_str(), width, p.step.div_euclid(width)))
                .and_modify(|r| {
                    r.n += 1;
                    if p.value < r.min.1 {
                        r.min = (p.step, p.value);
                    }
                    if p.value > r.max.1 {
                        r.max = (p.step, p.value);
                    }
                })
                .or_insert(Rollup {
                    n: 1,
                    min: (p.step, p.value),
                    max: (p.step, p.value),
                });
        }
    }
    let groups: Vec<_> = groups.into_iter().collect();
    for chunk in groups.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO run_metric_buckets (run_id, name, width, bucket, n, min_step, min_value, max_step, max_value) ",
        );
        q.push_values(chunk, |mut b, ((name, width, bucket), r)| {
            b.push_bind(run)
                .push_bind(*name)
                .push_bind(*width)
                .push_bind(*bucket)
                .push_bind(r.n)
                .push_bind(r.min.0)
                .push_bind(r.min.1)
                .push_bind(r.max.0)
                .push_bind(r.max.1);
        });
        q.push(
            " ON CONFLICT (run_id, name, width, bucket) DO UPDATE SET n = n + excluded.n, \
             min_step = CASE WHEN excluded.min_value < min_value THEN excluded.min_step ELSE min_step END, \
             min_value = min(min_value, excluded.min_value), \
             max_step = CASE WHEN excluded.max_value > max_value THEN excluded.max_step ELSE max_step END, \
             max_value = max(max_value, excluded.max_value)",
        );
        q.build().execute(&mut *db).await?;
    }
    Ok(())
}

/// Every point of a run (or of one metric), ordered by name and step.
pub async fn all(pool: &SqlitePool, run: i64, name: Option<&str>) -> Result<Vec<MetricPoint>> {
    points(
        sqlx::query_as(
            "SELECT step, name, value FROM run_metrics WHERE run_id = ? AND (?2 IS NULL OR name = ?2) \
             ORDER BY name, step",
        )
        .bind(run)
        .bind(name)
        .fetch_all(pool)
        .await?,
    )
}

/// The points of a run after `step` (a live page's next delta), ordered by name and step.
pub async fn after(pool: &SqlitePool, run: i64, step: i64) -> Result<Vec<MetricPoint>> {
    points(
        sqlx::query_as(
            "SELECT step, name, value FROM run_metrics WHERE run_id = ? AND step > ? ORDER BY name, step",
        )
        .bind(run)
        .bind(step)
        .fetch_all(pool)
        .await?,
    )
}

/// The last step any metric of a run has reached (none before its first point).
pub async fn last_step(pool: &SqlitePool, run: i64) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT max(step) FROM run_metrics WHERE run_id = ?")
            .bind(run)
            .fetch_one(pool)
            .await?,
    )
}

fn points(rows: Vec<(i64, String, f64)>) -> Result<Vec<MetricPoint>> {
    Ok(rows
        .into_iter()
        .map(|(step, name, value)| MetricPoint { step, name, value })
        .collect())
}

/// About `max_points` points per metric (ordered by name and step) with every spike kept: the
/// first and last point, and the smallest and largest value of each stretch of steps. Reads
/// the widest rollup that still gives enough buckets (the narrowest while it gives at least
/// half of them), not the points themselves; a run too short even for that has its points
/// grouped into narrower stretches by SQLite.
pub async fn downsampled(
    pool: &SqlitePool,
    run: i64,
    name: Option<&str>,
    max_points: usize,
) -> Result<Vec<MetricPoint>> {
    let Some(max_step) = last_step(pool, run).await? else {
        return Ok(Vec::new());
    };
    let wanted_buckets = (max_points as i64 / 2).max(1);
    if max_step <= max_points as i64 {
        // Short runs: the points themselves are few.
        return Ok(still_api::downsample_each(
            all(pool, run, name).await?,
            max_points,
        ));
    }
    // The narrowest rollup still serves when it gives at least half the buckets asked for.
    let rows: Vec<(String, i64, f64, i64, f64)> = if max_step / WIDTHS[0] < wanted_buckets / 2 {
        // Too few steps for the narrowest rollup: the same buckets, narrower, grouped by SQLite
        // over the points (a lone min() or max() takes its step from the row that has it).
        let width = (max_step + wanted_buckets - 1) / wanted_buckets;
        sqlx::query_as(
            "SELECT lo.name, lo.step, lo.v, hi.step, hi.v FROM \
             (SELECT name, step / ?2 AS b, step, min(value) AS v FROM run_metrics \
              WHERE run_id = ?1 AND (?3 IS NULL OR name = ?3) GROUP BY name, b) lo \
             JOIN (SELECT name, step / ?2 AS b, step, max(value) AS v FROM run_metrics \
              WHERE run_id = ?1 AND (?3 IS NULL OR name = ?3) GROUP BY name, b) hi \
             USING (name, b) ORDER BY lo.name, b",
        )
        .bind(run)
        .bind(width)
        .bind(name)
        .fetch_all(pool)
        .await?
    } else {
        let width = WIDTHS
            .iter()
            .rev()
            .copied()
            .find(|w| max_step / w >= wanted_buckets)
            .unwrap_or(WIDTHS[0]);
        sqlx::query_as(
            "SELECT name, min_step, min_value, max_step, max_value FROM run_metric_buckets \
             WHERE run_id = ? AND width = ? AND (?3 IS NULL OR name = ?3) ORDER BY name, bucket",
        )
        .bind(run)
        .bind(width)
        .bind(name)
        .fetch_all(pool)
        .await?
    };
    let mut out = Vec::new();
    for chunk in rows.chunk_by(|a, b| a.0 == b.0) {
        let metric = &chunk[0].0;
        let mut points = Vec::with_capacity(chunk.len() * 2 + 2);
        for (_, min_step, min_value, max_step, max_value) in chunk {
            let mut pair = [(*min_step, *min_value), (*max_step, *max_value)];
            pair.sort_by_key(|p| p.0);
            for (step, value) in pair {
                if points.last().is_none_or(|p: &MetricPoint| p.step < step) {
                    points.push(MetricPoint {
                        step,
                        name: metric.clone(),
                        value,
                    });
                }
            }
        }
        // The true ends (the last value is what a run page shows as "now").
        for (order, at_end) in [("ASC", false), ("DESC", true)] {
            let end: Option<(i64, f64)> = sqlx::query_as(&format!(
                "SELECT step, value FROM run_metrics WHERE run_id = ? AND name = ? ORDER BY step {order} LIMIT 1"
            ))
            .bind(run)
            .bind(metric)
            .fetch_optional(pool)
            .await?;
            if let Some((step, value)) = end {
                let point = MetricPoint {
                    step,
                    name: metric.clone(),
                    value,
                };
                if at_end && points.last().is_none_or(|p| p.step < step) {
                    points.push(point);
                } else if !at_end && points.first().is_none_or(|p| p.step > step) {
                    points.insert(0, point);
                }
            }
        }
        out.extend(still_api::downsample(points, max_points));
    }
    Ok(out)
}

/// Each recorded metric of a run: its number of points, the value at its last step, and its
/// smallest and largest value with their steps, by name. Reads the widest rollup (one row per
/// 4,096 steps) and each metric's last point, not the points.
pub async fn summaries(pool: &SqlitePool, run: i64) -> Result<Vec<still_api::MetricSummary>> {
    let rows: Vec<(String, i64, i64, f64, i64, f64)> = sqlx::query_as(
        "SELECT name, n, min_step, min_value, max_step, max_value FROM run_metric_buckets \
         WHERE run_id = ? AND width = ? ORDER BY name, bucket",
    )
    .bind(run)
    .bind(WIDTHS[WIDTHS.len() - 1])
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for chunk in rows.chunk_by(|a, b| a.0 == b.0) {
        let name = chunk[0].0.clone();
        let n = chunk.iter().map(|r| r.1).sum();
        // The first bucket holding the extreme wins a tie: the earliest step reached it.
        let mut min = (chunk[0].2, chunk[0].3);
        let mut max = (chunk[0].4, chunk[0].5);
        for r in &chunk[1..] {
            if r.3 < min.1 {
                min = (r.2, r.3);
            }
            if r.5 > max.1 {
                max = (r.4, r.5);
            }
        }
        let (last_step, last): (i64, f64) = sqlx::query_as(
            "SELECT step, value FROM run_metrics WHERE run_id = ? AND name = ? ORDER BY step DESC LIMIT 1",
        )
        .bind(run)
        .bind(&name)
        .fetch_one(pool)
        .await?;
        let best = if still_api::higher_is_better(&name) {
            max.1
        } else {
            min.1
        };
        out.push(still_api::MetricSummary {
            name,
            n,
            last_step,
            last,
            min: min.1,
            min_step: min.0,
            max: max.1,
            max_step: max.0,
            best,
        });
    }
    Ok(out)
}
