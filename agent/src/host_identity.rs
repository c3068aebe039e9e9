//! Who this host is in the trail: one value, built from the `[agent]` section when the config
//! is validated ([`crate::settings::Settings::identity`]).
//!
//! Every record the agent writes (a host source's, an application's, the sidecar's, the agent's
//! own) carries the same `recipientAccountId` and `awsRegion`, and every ARN it builds names the
//! same partition, account and host. **Guarantee: they agree.** There is one type for these five
//! values and one place that builds it, so no component can be started with a host name or an
//! account the others do not use (before, five structs each copied the fields by hand).
//!
//! What each consumer derives from it lives with the consumer: the agent's own records in
//! [`crate::agent_events`], host accounts as `userIdentity` in [`crate::sources::host_accounts`],
//! the sidecar's ARN templates in `sources::sidecar::routes`.

/// The host's name and place in the trail. Cheap to clone (five short strings); components
/// keep their own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host name: a path element in ARNs, the agent's name towards the collector, and part of
    /// deterministic event IDs.
    pub host: String,
    /// `recipientAccountId` of every record.
    pub account_id: String,
    /// `awsRegion` of every record.
    pub region: String,
    /// `<domain>` in event sources (`sshd.<domain>`, `groundtrail.<domain>`).
    pub domain: String,
    /// ARN partition (`aws`, `aws-cn`, ...).
    pub partition: String,
}

impl HostIdentity {
    /// The IAM-user ARN of a principal on this host, `arn:<p>:iam::<acct>:user/<host>/<name>`:
    /// a host account and a sidecar client certificate name people the same way, so one query
    /// finds a person whichever way they came in.
    pub fn user_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:user/{}/{}",
            self.partition, self.account_id, self.host, name
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::settings::system_hostname;

    /// The guarantee above: the identity the runtime hands out is the config's, and what the
    /// sources, the agent's own records and the sidecar build from it names the same host,
    /// account and partition.
    #[test]
    fn every_consumer_names_the_configured_host() {
        let id = Config::parse(
            "[agent]\nhost = \"web-7\"\naccount_id = \"210987654321\"\nregion = \"dc-2\"\n\
             domain = \"corp.internal\"\npartition = \"aws-cn\"\n",
            "test",
        )
        .and_then(Config::validate)
        .unwrap()
        .identity;
        assert_eq!(
            (id.host.as_str(), id.account_id.as_str(), id.region.as_str()),
            ("web-7", "210987654321", "dc-2")
        );
        let arns = [
            id.user_arn("alice"),
            id.agent_arn(),
            id.user("alice").arn.unwrap(),
            id.file_resource("/etc/passwd").arn.unwrap(),
        ];
        for arn in arns {
            assert!(arn.starts_with("arn:aws-cn:"), "{arn}");
            assert!(arn.contains(":210987654321:"), "{arn}");
            assert!(arn.contains("/web-7/"), "{arn}");
        }
        let own = id.agent_record("TestEvent", serde_json::json!({}));
        assert_eq!(own.recipient_account_id.as_deref(), Some("210987654321"));
        assert_eq!(own.aws_region, "dc-2");
        assert_eq!(own.event_source, "groundtrail.corp.internal");
    }

    /// An empty `host` in the file is the system host name by the time anyone reads it.
    #[test]
    fn an_empty_host_is_the_system_host_name() {
        let s = Config::parse("[agent]\nhost = \"\"\n", "test")
            .and_then(Config::validate)
            .unwrap();
        assert_eq!(s.identity.host, system_hostname());
        assert_eq!(s.effective().agent.host, system_hostname());
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::HostIdentity;

    /// The host the unit tests run as.
    pub fn web1() -> HostIdentity {
        HostIdentity {
            host: "web1".into(),
            account_id: "123456789012".into(),
            region: "onprem-1".into(),
            domain: "onprem.internal".into(),
            partition: "aws".into(),
        }
    }
}
