//! Host accounts -> CloudTrail's two-level `userIdentity`.
//!
//! CloudTrail separates *who authenticated* from *what they act as*: an IAM user who assumes a
//! role shows up as `AssumedRole` whose session name is the person and whose `sessionContext`
//! names the role. A host has the same two levels: the person who logged in (the ssh login,
//! auditd's `auid`, sudo's invoking user) and the account they switched to (the sudo/su target).
//! Mapping them this way lets the same "who became root and did what" queries run on AWS and
//! on-prem trails.
//!
//! | host situation | `userIdentity` |
//! | --- | --- |
//! | alice acts as herself | `IAMUser`, `arn:<p>:iam::<acct>:user/<host>/alice` |
//! | alice acts as root (sudo, su, auid≠uid) | `AssumedRole`, `arn:<p>:sts::<acct>:assumed-role/root/alice`, `sessionContext.sessionIssuer` = role `root`, `sourceIdentity` = alice |
//! | the system itself (auid unset: systemd, cron, boot) | `AWSService`, `invokedBy` = `<service>.<domain>` |
//! | an ssh failure with an unknown user name | `IAMUser` with `userName` `HIDDEN_DUE_TO_SECURITY_REASONS`, as AWS does for console sign-in |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use groundtrail_common::event::{SessionAttributes, SessionContext, SessionIssuer};
use groundtrail_common::{Resource, UserIdentity};

use crate::host_identity::HostIdentity;

/// auditd's "unset" login uid (`(uid_t)-1`).
pub const AUID_UNSET: u32 = u32::MAX;

/// What AWS writes as `userName` for a failed sign-in with a user name that does not exist
/// (the "name" may be a mistyped password).
pub const HIDDEN_USER: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// uid -> user name, read from a passwd-format file (`/etc/passwd` by default; tests point it
/// elsewhere). Reloaded when a lookup misses, so users created after start resolve too.
#[derive(Debug)]
pub struct Passwd {
    path: PathBuf,
    map: RwLock<HashMap<u32, String>>,
    /// When the file was last read: misses reload it at most once per [`RELOAD_EVERY`], so a
    /// stream of events from an unknown uid does not re-read the file for each.
    loaded: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Minimum time between two reloads of the passwd file on lookup misses.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Passwd {
    /// Loads `path`; a missing or unreadable file gives an empty map (names then fall back to
    /// `uid:<n>`), never an error: identity is best-effort, the record is not.
    pub fn load(path: impl Into<PathBuf>) -> Passwd {
        let path = path.into();
        let map = read_passwd(&path);
        Passwd {
            path,
            map: RwLock::new(map),
            loaded: std::sync::Mutex::new(Some(std::time::Instant::now())),
        }
    }

    /// A table from literal `(uid, name)` pairs, for tests and for hosts without a file.
    pub fn from_pairs(pairs: &[(u32, &str)]) -> Passwd {
        Passwd {
            path: PathBuf::new(),
            map: RwLock::new(pairs.iter().map(|(u, n)| (*u, n.to_string())).collect()),
            loaded: std::sync::Mutex::new(None),
        }
    }

    /// The name of `uid`, or `None` if the table (after one reload) does not know it.
    pub fn name(&self, uid: u32) -> Option<String> {
        if let Some(n) = self.map.read().ok().and_then(|m| m.get(&uid).cloned()) {
            return Some(n);
        }
        if self.path.as_os_str().is_empty() {
            return None;
        }
        if let Ok(mut loaded) = self.loaded.lock() {
            if loaded.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
                return None;
            }
            *loaded = Some(std::time::Instant::now());
        }
        let fresh = read_passwd(&self.path);
        let found = fresh.get(&uid).cloned();
        if let Ok(mut m) = self.map.write() {
            *m = fresh;
        }
        found
    }

    /// The name of `uid`, or `uid:<n>` when unknown (still a stable, distinct principal).
    pub fn name_or_uid(&self, uid: u32) -> String {
        self.name(uid).unwrap_or_else(|| format!("uid:{uid}"))
    }
}

fn read_passwd(path: &Path) -> HashMap<u32, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let _pw = it.next()?;
            let uid = it.next()?.parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| (uid, name.to_string()))
        })
        .collect()
}

/// The `userIdentity` and the resources of this host's accounts, packages, units, files and
/// commands: every host source names things through these, so one host's records agree on
/// ARN shapes whichever log they came from.
impl HostIdentity {
    /// The person `name` acting as themselves.
    pub fn user(&self, name: &str) -> UserIdentity {
        UserIdentity {
            identity_type: Some("IAMUser".into()),
            principal_id: Some(format!("{}:{}", self.host, name)),
            arn: Some(self.user_arn(name)),
            account_id: Some(self.account_id.clone()),
            user_name: Some(name.into()),
            ..UserIdentity::default()
        }
    }

    /// A failed sign-in whose user name does not exist on the host (AWS hides such names).
    pub fn hidden_user(&self) -> UserIdentity {
        UserIdentity {
            identity_type: Some("IAMUser".into()),
            account_id: Some(self.account_id.clone()),
            user_name: Some(HIDDEN_USER.into()),
            ..UserIdentity::default()
        }
    }

    /// `person` acting as `target` (sudo, su, or auditd's auid ≠ uid). When they are the same
    /// account this is just [`HostIdentity::user`].
    pub fn assumed(&self, person: &str, target: &str) -> UserIdentity {
        if person == target {
            return self.user(person);
        }
        let role_arn = format!(
            "arn:{}:iam::{}:role/{}/{}",
            self.partition, self.account_id, self.host, target
        );
        let role_id = format!("{}:{}", self.host, target);
        UserIdentity {
            identity_type: Some("AssumedRole".into()),
            principal_id: Some(format!("{role_id}:{person}")),
            arn: Some(format!(
                "arn:{}:sts::{}:assumed-role/{}/{}",
                self.partition, self.account_id, target, person
            )),
            account_id: Some(self.account_id.clone()),
            session_context: Some(SessionContext {
                session_issuer: Some(SessionIssuer {
                    issuer_type: Some("Role".into()),
                    principal_id: Some(role_id),
                    arn: Some(role_arn),
                    account_id: Some(self.account_id.clone()),
                    user_name: Some(target.into()),
                    ..SessionIssuer::default()
                }),
                attributes: Some(SessionAttributes {
                    mfa_authenticated: Some("false".into()),
                    ..SessionAttributes::default()
                }),
                source_identity: Some(person.into()),
                ..SessionContext::default()
            }),
            ..UserIdentity::default()
        }
    }

    /// The host itself (no person behind it: auid unset), e.g. systemd starting a unit.
    pub fn service(&self, service: &str) -> UserIdentity {
        UserIdentity {
            identity_type: Some("AWSService".into()),
            account_id: Some(self.account_id.clone()),
            invoked_by: Some(format!("{service}.{}", self.domain)),
            ..UserIdentity::default()
        }
    }

    /// Identity from auditd's numbers: `auid` is the person, `uid` what the process runs as.
    /// An unset auid means the system acted (daemon, boot): then the running account is the
    /// principal if it is not root, else the `service` identity.
    pub fn from_audit(
        &self,
        passwd: &Passwd,
        auid: Option<u32>,
        uid: Option<u32>,
        service: &str,
    ) -> UserIdentity {
        match (auid.filter(|a| *a != AUID_UNSET), uid) {
            (Some(a), Some(u)) => self.assumed(&passwd.name_or_uid(a), &passwd.name_or_uid(u)),
            (Some(a), None) => self.user(&passwd.name_or_uid(a)),
            (None, Some(u)) if u != 0 => self.user(&passwd.name_or_uid(u)),
            _ => self.service(service),
        }
    }

    fn resource(&self, kind: &str, arn: String) -> Resource {
        Resource {
            account_id: Some(self.account_id.clone()),
            resource_type: Some(format!("Groundtrail::Host::{kind}")),
            arn: Some(arn),
            ..Resource::default()
        }
    }

    /// `Groundtrail::Host::User`: a host account.
    pub fn user_resource(&self, name: &str) -> Resource {
        self.resource("User", self.user_arn(name))
    }

    /// `Groundtrail::Host::Role`: a host account as the target of sudo/su (AssumeRole).
    pub fn role_resource(&self, name: &str) -> Resource {
        let arn = format!(
            "arn:{}:iam::{}:role/{}/{}",
            self.partition, self.account_id, self.host, name
        );
        self.resource("Role", arn)
    }

    /// `Groundtrail::Host::Group`: a host group.
    pub fn group_resource(&self, name: &str) -> Resource {
        let arn = format!(
            "arn:{}:iam::{}:group/{}/{}",
            self.partition, self.account_id, self.host, name
        );
        self.resource("Group", arn)
    }

    /// `Groundtrail::Host::Package`: an installed package.
    pub fn package_resource(&self, name: &str) -> Resource {
        let arn = format!(
            "arn:{}:packages:{}:{}:package/{}/{}",
            self.partition, self.region, self.account_id, self.host, name
        );
        self.resource("Package", arn)
    }

    /// `Groundtrail::Host::Service`: a systemd unit.
    pub fn service_resource(&self, unit: &str) -> Resource {
        let arn = format!(
            "arn:{}:systemd:{}:{}:unit/{}/{}",
            self.partition, self.region, self.account_id, self.host, unit
        );
        self.resource("Service", arn)
    }

    /// `Groundtrail::Host::File`: a file (absolute path, appended after the host).
    pub fn file_resource(&self, path: &str) -> Resource {
        let sep = if path.starts_with('/') { "" } else { "/" };
        let arn = format!(
            "arn:{}:files:{}:{}:file/{}{sep}{}",
            self.partition, self.region, self.account_id, self.host, path
        );
        self.resource("File", arn)
    }

    /// `Groundtrail::Host::Command`: the program a command record ran.
    pub fn command_resource(&self, exe: &str) -> Resource {
        let sep = if exe.starts_with('/') { "" } else { "/" };
        let arn = format!(
            "arn:{}:exec:{}:{}:command/{}{sep}{}",
            self.partition, self.region, self.account_id, self.host, exe
        );
        self.resource("Command", arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> HostIdentity {
        crate::host_identity::testutil::web1()
    }

    #[test]
    fn assumed_role_names_person_and_target() {
        let id = ids().assumed("alice", "root");
        assert_eq!(id.identity_type.as_deref(), Some("AssumedRole"));
        assert_eq!(
            id.arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/root/alice")
        );
        let sc = id.session_context.unwrap();
        assert_eq!(sc.source_identity.as_deref(), Some("alice"));
        let issuer = sc.session_issuer.unwrap();
        assert_eq!(issuer.user_name.as_deref(), Some("root"));
        assert_eq!(
            issuer.arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/web1/root")
        );
        assert_eq!(
            ids().user("alice").arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/web1/alice")
        );
    }

    #[test]
    fn audit_ids_map_to_two_levels() {
        let pw = Passwd::from_pairs(&[(0, "root"), (1000, "alice")]);
        let i = ids();
        let id = i.from_audit(&pw, Some(1000), Some(0), "systemd");
        assert_eq!(id.identity_type.as_deref(), Some("AssumedRole"));
        let id = i.from_audit(&pw, Some(AUID_UNSET), Some(0), "systemd");
        assert_eq!(id.invoked_by.as_deref(), Some("systemd.onprem.internal"));
        let id = i.from_audit(&pw, Some(1000), Some(1000), "x");
        assert_eq!(id.user_name.as_deref(), Some("alice"));
        let id = i.from_audit(&pw, Some(4242), None, "x");
        assert_eq!(id.user_name.as_deref(), Some("uid:4242"));
    }

    #[test]
    fn passwd_file_is_parsed_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, "root:x:0:0:root:/root:/bin/bash\nbroken\n").unwrap();
        let pw = Passwd::load(&p);
        assert_eq!(pw.name(0).as_deref(), Some("root"));
        assert_eq!(pw.name(1000), None);
        // Pretend the last read is old enough for a miss to reload.
        *pw.loaded.lock().unwrap() = None;
        std::fs::write(
            &p,
            "root:x:0:0::/:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(pw.name(1000).as_deref(), Some("bob"));
    }
}
