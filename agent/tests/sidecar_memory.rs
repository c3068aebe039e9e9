//! 100 MB up and 100 MB down through the sidecar, with the whole process's heap watched.
//!
//! A counting global allocator tracks live heap bytes and their high-water mark. Both bodies
//! are generated on the fly and checked chunk by chunk as they arrive, so the only way the peak
//! can approach 100 MB is if something in the path (sidecar, hyper, capture) held the body.
//! The test checks memory, not time. It lives in its own test binary so that no other test's
//! allocations share the counter.

#[allow(dead_code)]
mod sidecar_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sidecar_common::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now =
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let delta = new_size as isize - layout.size() as isize;
            let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MB: u64 = 1024 * 1024;
const SIZE: u64 = 100 * MB;
/// Peak heap growth allowed during a transfer: well below the body, well above hyper's and
/// the sidecar's per-connection buffers.
const BOUND: isize = 24 * MB as isize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_hundred_megabytes_each_way_never_sit_in_memory() {
    let up = upstream().await;
    let sc = start(
        config(&up),
        buffer_opts(64 << 20, groundtrail_agent::buffer::FullPolicy::Block),
    )
    .await;
    let c = client();
    // Warm up pools, TLS-free connection setup, the buffer's first write.
    send(&c, get(&sc.url("/warm"), "rid-warm")).await;
    sc.record_for("rid-warm").await;

    // Upload: JSON content type on purpose, so the sidecar's capture is active (and must stop
    // at its 100 KB limit).
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (status, _, body) = send(
        &c,
        Request::put(sc.url("/upload"))
            .header("x-request-id", "rid-up")
            .header("content-type", "application/json")
            .body(PatternBody::new(SIZE).boxed_unsync())
            .unwrap(),
    )
    .await;
    let up_peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"bytes": SIZE, "ok": true}),
        "upstream received all 100 MB, in order"
    );

    // Download, consumed and checked frame by frame.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let resp = c
        .request(get(&sc.url(&format!("/download?n={SIZE}")), "rid-down"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if let Some(d) = f.data_ref() {
            assert!(is_pattern(d, got), "download corrupted at {got}");
            got += d.len() as u64;
        }
    }
    let down_peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(got, SIZE);

    println!(
        "peak heap growth: upload {:.1} MB, download {:.1} MB (body {} MB, bound {} MB)",
        up_peak as f64 / MB as f64,
        down_peak as f64 / MB as f64,
        SIZE / MB,
        BOUND / MB as isize
    );
    assert!(up_peak < BOUND, "upload peak {up_peak} bytes");
    assert!(down_peak < BOUND, "download peak {down_peak} bytes");

    let r = sc.record_for("rid-up").await;
    let extra = r.additional_event_data.as_ref().unwrap();
    assert_eq!(extra["bytesTransferredIn"], SIZE);
    assert_eq!(r.request_parameters.as_ref().unwrap()["omitted"], true);
    let r = sc.record_for("rid-down").await;
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["bytesTransferredOut"],
        SIZE
    );
    sc.stop().await;
}
