//! Scenario 2a: The agent's durable appends, in process through the agent library's `Buffer` (zstd per
//! record, one sled batch with the sequence meta, flush before returning), beside raw sled
//! insert + flush on the same disk. The approach of `agent/examples/buffer_bench.rs`, with the
//! generator's records.

use super::{fig, limit};
use crate::Ctx;
use crate::limits;
use crate::report::Goal;
use groundtrail_common::Record;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.size(2_000, 200);
    let batches = ctx.size(300, 30);
    let records: Vec<Record> = ctx
        .templates
        .iter()
        .take(1000)
        .map(|t| serde_json::from_slice(&t.json))
        .collect::<Result<_, _>>()?;
    let dir = ctx.dir("agent-buffer")?;
    ctx.step(format!("agent-buffer: raw sled insert + flush x{n}"));
    let raw = tokio::task::block_in_place(|| limits::raw_sled(&dir, &records, n))?;
    ctx.step(format!("agent-buffer: {n} appends of 1 record"));
    let one = tokio::task::block_in_place(|| {
        limits::buffer_appends(&dir.join("one"), &records, n, 1, 1)
    })?;
    ctx.step(format!("agent-buffer: {batches} appends of 100 records"));
    let hundred = tokio::task::block_in_place(|| {
        limits::buffer_appends(&dir.join("hundred"), &records, batches, 100, 1)
    })?;
    ctx.step(format!("agent-buffer: {n} appends from 4 threads"));
    let four = tokio::task::block_in_place(|| {
        limits::buffer_appends(&dir.join("four"), &records, n, 1, 4)
    })?;
    ctx.report.note(format!(
        "agent-buffer: in-process agent library Buffer (flush_delay 0), generator records (mean {:.0} B), on the work directory's disk; raw sled = insert + flush of one record",
        records.iter().map(|r| r.to_json().len()).sum::<usize>() as f64 / records.len() as f64
    ));
    limit(
        ctx,
        "agent.raw_sled_appends_per_s",
        raw.per_sec(),
        "appends/s",
    );
    fig(
        ctx,
        "agent.buffer_1_appends_per_s",
        one.per_sec(),
        "appends/s",
        None,
        "beside raw sled above",
    );
    fig(
        ctx,
        "agent.buffer_batch_records_per_s",
        hundred.bytes as f64 / hundred.secs,
        "records/s",
        Some(Goal::AtLeast(50_000.0)),
        "goal >= 50,000 records/s",
    );
    fig(
        ctx,
        "agent.buffer_concurrent_appends_per_s",
        four.per_sec(),
        "appends/s",
        None,
        "group commit",
    );
    Ok(())
}
