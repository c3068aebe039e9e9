//! Sidecar mode: the agent as a reverse proxy that turns every HTTP API call into a CloudTrail
//! record (issue 5). Work in progress.
