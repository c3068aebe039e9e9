//! The agent's own records: its start and stop, and every loss it knows of.
//!
//! Loss is never silent: when the agent drops records (buffer full under `drop_newest`), skips a
//! corrupt buffer entry, has to move a damaged buffer aside, or sets aside a record the collector
//! refuses, that fact becomes a CloudTrail record in the same trail, with counts and the agent
//! sequence numbers concerned in `requestParameters`. They use eventSource
//! `groundtrail.<domain>`, eventType `AwsServiceEvent` (the agent acts as a service on the host,
//! as AWS services do in their own trails) and a `userIdentity` naming the agent on this host.

use groundtrail_common::event::{Record, Resource, UserIdentity};
use serde_json::{Value, json};

use crate::host_identity::HostIdentity;

/// The user agent of the agent's own records.
pub const USER_AGENT: &str = concat!("groundtrail-agent/", env!("CARGO_PKG_VERSION"));

/// The agent's own records, named after the host they come from: `groundtrail.<domain>` and
/// the identity of this host's agent. Prefixed `agent_` because [`HostIdentity`] also builds
/// the host's accounts (`sources::host_accounts`).
impl HostIdentity {
    /// `groundtrail.<domain>`: the eventSource of the agent's own records. Applications may not
    /// post records under it (see `sources::app_events`).
    pub fn agent_event_source(&self) -> String {
        format!("groundtrail.{}", self.domain)
    }

    /// `arn:<partition>:iam::<account>:user/<host>/groundtrail-agent`.
    pub fn agent_arn(&self) -> String {
        format!(
            "arn:{}:iam::{}:user/{}/groundtrail-agent",
            self.partition, self.account_id, self.host
        )
    }

    /// A record of the agent's own with `requestParameters` = `params`.
    pub fn agent_record(&self, event_name: &str, params: Value) -> Record {
        let source = self.agent_event_source();
        let mut r = Record::new(
            source.clone(),
            event_name,
            "AwsServiceEvent",
            self.region.clone(),
            self.account_id.clone(),
        );
        r.user_identity = Some(UserIdentity {
            identity_type: Some("AWSService".to_string()),
            principal_id: Some(format!("groundtrail-agent@{}", self.host)),
            arn: Some(self.agent_arn()),
            account_id: Some(self.account_id.clone()),
            user_name: Some("groundtrail-agent".to_string()),
            invoked_by: Some(source.clone()),
            ..UserIdentity::default()
        });
        r.source_ip_address = Some(source);
        r.user_agent = Some(USER_AGENT.to_string());
        r.read_only = Some(false);
        r.request_parameters = Some(params);
        r.resources = Some(vec![Resource {
            account_id: Some(self.account_id.clone()),
            resource_type: Some("Groundtrail::Agent::Host".to_string()),
            arn: Some(self.agent_arn()),
            ..Resource::default()
        }]);
        r
    }

    /// `AgentStart`: the agent began (with its buffer depth, collector URLs, ...).
    pub fn agent_start(&self, details: Value) -> Record {
        self.agent_record("AgentStart", self.with_agent_host(details))
    }

    /// `AgentStop`: the agent is stopping (with the reason and what it left buffered).
    pub fn agent_stop(&self, details: Value) -> Record {
        self.agent_record("AgentStop", self.with_agent_host(details))
    }

    fn with_agent_host(&self, details: Value) -> Value {
        let mut v = json!({
            "host": self.host,
            "agentVersion": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
        });
        if let (Some(base), Value::Object(more)) = (v.as_object_mut(), details) {
            base.extend(more);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_records_are_valid_cloudtrail() {
        let id = HostIdentity {
            host: "web-1".into(),
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            domain: "onprem.internal".into(),
            partition: "aws".into(),
        };
        let r = id.agent_start(json!({"bufferDepth": 3}));
        r.validate().unwrap();
        assert_eq!(r.event_source, "groundtrail.onprem.internal");
        assert_eq!(r.event_name, "AgentStart");
        let p = r.request_parameters.as_ref().unwrap();
        assert_eq!(p["host"], "web-1");
        assert_eq!(p["bufferDepth"], 3);
        assert_eq!(
            r.user_identity.unwrap().arn.unwrap(),
            "arn:aws:iam::123456789012:user/web-1/groundtrail-agent"
        );
        assert_eq!(r.recipient_account_id.as_deref(), Some("123456789012"));
    }
}
