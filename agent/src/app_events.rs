//! TODO: see issue.
