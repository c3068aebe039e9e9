//! The merge of sshd's lines of one attempt, on lines in sshd's exact format (`tool format`)
//! and on the loghub OpenSSH sample (read from `../shared/host-logs` when present; its licence
//! does not allow copying it here).

use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::sources::tail::FileId;
use crate::sources::testutil::{env, shared_sample};

static TEST_STATS: SourceStats = SourceStats::new();

fn handler() -> AttemptHandler {
    AttemptHandler::new(
        AuthLogParser::new(
            Arc::new(env()),
            Utc.with_ymd_and_hms(2017, 12, 31, 0, 0, 0).unwrap(),
        ),
        &TEST_STATS,
    )
}

fn file() -> FileId {
    FileId {
        dev: 1,
        ino: 2,
        head_len: 10,
        head: "abcd".into(),
    }
}

/// Feeds `text` from byte `from` on, as the follower does; returns the records and the
/// checkpoint the follower would store after the last line (`pending_from` or the end).
fn run(h: &mut AttemptHandler, text: &str, from: u64, end_of_file: bool) -> (Vec<Record>, u64) {
    let id = file();
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        if offset >= from {
            h.line(
                line.trim_end_matches('\n').as_bytes(),
                LineRef {
                    host: "web1",
                    file: &id,
                    offset,
                },
                &mut out,
            );
        }
        offset += line.len() as u64;
    }
    if end_of_file {
        h.flush(&mut out);
    } else {
        h.idle(&mut out);
    }
    let ck = h.pending_from().map_or(offset, |p| p.min(offset));
    (out, ck)
}

fn failures(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| r.event_name == "ConsoleLogin" && r.error_code.is_some())
        .count()
}

const INVALID_THEN_PASSWORD: &str = "\
Dec 10 07:07:38 LabSZ sshd[24206]: Invalid user test9 from 52.80.34.196
Dec 10 07:07:38 LabSZ sshd[24206]: input_userauth_request: invalid user test9 [preauth]
Dec 10 07:07:38 LabSZ sshd[24206]: pam_unix(sshd:auth): check pass; user unknown
Dec 10 07:07:38 LabSZ sshd[24206]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=52.80.34.196
Dec 10 07:07:45 LabSZ sshd[24206]: Failed password for invalid user test9 from 52.80.34.196 port 36060 ssh2
Dec 10 07:07:45 LabSZ sshd[24206]: Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]
";

#[test]
fn invalid_user_then_failed_password_is_one_record_keyed_on_the_first_line() {
    let mut h = handler();
    let (out, ck) = run(&mut h, INVALID_THEN_PASSWORD, 0, false);
    assert_eq!(out.len(), 1, "{out:#?}");
    let r = &out[0];
    assert_eq!(failures(&out), 1);
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["AuthMethod"],
        "password"
    );
    assert_eq!(r.source_ip_address.as_deref(), Some("52.80.34.196"));
    assert_eq!(
        r.event_id,
        crate::sources::tail::event_id("web1", &file(), 0)
    );
    assert_eq!(ck as usize, INVALID_THEN_PASSWORD.len());
}

#[test]
fn invalid_user_without_a_password_is_still_one_record() {
    let text = "\
Dec 10 09:07:23 LabSZ sshd[24415]: Invalid user 0 from 185.190.58.151
Dec 10 09:07:23 LabSZ sshd[24415]: input_userauth_request: invalid user 0 [preauth]
Dec 10 09:07:23 LabSZ sshd[24415]: Failed none for invalid user 0 from 185.190.58.151 port 55495 ssh2
Dec 10 09:07:24 LabSZ sshd[24415]: Connection closed by 185.190.58.151 [preauth]
";
    let mut h = handler();
    let (out, ck) = run(&mut h, text, 0, false);
    assert_eq!(failures(&out), 1, "{out:#?}");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].additional_event_data.as_ref().unwrap()["AuthMethod"],
        "none"
    );
    assert_eq!(
        out[0].event_id,
        crate::sources::tail::event_id("web1", &file(), 0)
    );
    assert_eq!(ck as usize, text.len());
}

#[test]
fn further_passwords_of_the_connection_are_further_attempts() {
    let text = "\
Dec 10 08:24:40 LabSZ sshd[24363]: Invalid user 0 from 5.188.10.180
Dec 10 08:24:40 LabSZ sshd[24363]: Failed none for invalid user 0 from 5.188.10.180 port 49811 ssh2
Dec 10 08:24:45 LabSZ sshd[24363]: Failed password for invalid user 0 from 5.188.10.180 port 49811 ssh2
Dec 10 08:24:47 LabSZ sshd[24363]: Failed password for invalid user 0 from 5.188.10.180 port 49811 ssh2
Dec 10 08:24:49 LabSZ sshd[24363]: message repeated 2 times: [ Failed password for invalid user 0 from 5.188.10.180 port 49811 ssh2]
Dec 10 08:24:50 LabSZ sshd[24363]: Connection closed by 5.188.10.180 [preauth]
";
    let mut h = handler();
    let (out, _) = run(&mut h, text, 0, false);
    assert_eq!(failures(&out), 3, "{out:#?}");
    let ids: std::collections::HashSet<&str> = out.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn interleaved_connections_are_kept_apart_and_old_ones_expire() {
    let text = "\
Dec 10 07:00:00 LabSZ sshd[1]: Invalid user a from 10.0.0.1
Dec 10 07:00:01 LabSZ sshd[2]: Invalid user b from 10.0.0.2
Dec 10 07:00:02 LabSZ sshd[3]: Failed password for root from 10.0.0.3 port 1 ssh2
Dec 10 07:00:03 LabSZ sshd[2]: Failed password for invalid user b from 10.0.0.2 port 2 ssh2
Dec 10 07:00:04 LabSZ sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls
";
    let mut h = handler();
    let (out, ck) = run(&mut h, text, 0, false);
    // pid 3's own failure and pid 2's merged one; pid 1 is still open, the checkpoint held at
    // its line.
    assert_eq!(failures(&out), 2, "{out:#?}");
    assert_eq!(ck, 0);
    // A line logged past the grace time closes pid 1's attempt on its own.
    let later = "Dec 10 07:10:00 LabSZ sshd[9]: Server listening on 0.0.0.0 port 22.\n";
    let all = format!("{text}{later}");
    let (out, ck) = run(&mut h, &all, text.len() as u64, false);
    assert_eq!(failures(&out), 1);
    assert_eq!(
        out[0].event_id,
        crate::sources::tail::event_id("web1", &file(), 0)
    );
    assert_eq!(ck as usize, all.len());
}

#[test]
fn old_pam_failure_and_sshds_failed_line_are_one_attempt() {
    let text = "\
Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root
Jun 15 02:05:01 combo sshd[20882]: Failed password for root from 220.135.151.1 port 40000 ssh2
Jun 15 02:05:02 combo sshd(pam_unix)[20884]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root
";
    let mut h = handler();
    let (out, _) = run(&mut h, text, 0, true);
    // 20882: pam and sshd lines, one record (sshd's, with the address); 20884: pam alone.
    assert_eq!(failures(&out), 2, "{out:#?}");
    assert_eq!(out[0].source_ip_address.as_deref(), Some("220.135.151.1"));
}

/// A stop at every line, then a restart that re-reads from the stored checkpoint with a fresh
/// handler: the records of both runs together are exactly those of one uninterrupted run.
#[test]
fn a_restart_at_any_line_yields_the_same_records() {
    let text = format!(
        "{INVALID_THEN_PASSWORD}\
Dec 10 07:08:28 LabSZ sshd[24208]: Invalid user webmaster from 173.234.31.186
Dec 10 07:08:29 LabSZ sshd[24209]: Failed password for root from 5.36.59.76 port 42393 ssh2
Dec 10 07:08:30 LabSZ sshd[24208]: Failed password for invalid user webmaster from 173.234.31.186 port 39257 ssh2
Dec 10 07:08:31 LabSZ sshd[24210]: Invalid user x from 10.1.1.1
Dec 10 07:08:32 LabSZ sshd[24210]: Connection closed by 10.1.1.1 [preauth]
"
    );
    let ids = |rs: &[Record]| -> std::collections::BTreeSet<String> {
        rs.iter().map(|r| r.event_id.clone()).collect()
    };
    let (whole, _) = run(&mut handler(), &text, 0, false);
    assert_eq!(failures(&whole), 4);
    let cut_points: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
    for cut in cut_points {
        let mut first = handler();
        let (a, ck) = run(&mut first, &text[..cut], 0, false);
        let (b, _) = run(&mut handler(), &text, ck, false);
        let mut got = ids(&a);
        got.extend(ids(&b));
        assert_eq!(
            got,
            ids(&whole),
            "stopped after byte {cut}, checkpoint {ck}"
        );
    }
}

/// The numbers on the real sample: per line, 637 failure records (each `Invalid user`,
/// `Failed …` and `message repeated` line one); merged, one per attempt. The sample has 518
/// `Failed password` lines and 4 `Failed none`, 2 `message repeated … Failed password` lines
/// (one record each, with `repeatCount`), 113 `Invalid user` lines all followed by a `Failed`
/// of their pid, 3 of them only by `Failed none`: 518 + 2 + 3 = 523 attempts.
#[test]
fn shared_loghub_openssh_one_record_per_attempt() {
    let Some(text) = shared_sample("auth/loghub_OpenSSH_2k.log") else {
        return;
    };
    let before = text
        .lines()
        .filter(|l| {
            l.contains("]: Failed ")
                || l.contains("]: Invalid user ")
                || l.contains("]: message repeated")
        })
        .count();
    assert_eq!(before, 637, "what the per-line parser used to make of it");
    let text = format!("{text}\n");
    let (out, _) = run(&mut handler(), &text, 0, true);
    assert_eq!(failures(&out), 523);
    let successes = out
        .iter()
        .filter(|r| r.event_name == "ConsoleLogin" && r.error_code.is_none())
        .count();
    assert_eq!(successes, 1);
    let ids: std::collections::HashSet<&str> = out.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), out.len());
}
