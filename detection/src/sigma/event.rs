//! How a CloudTrail record is presented to Sigma rules.
//!
//! SigmaHQ's CloudTrail rules are written for SIEMs that index `requestParameters`,
//! `responseElements` and friends as text as well as by sub-field (e.g.
//! `requestParameters|contains: 'ARM'`), while Groundtrail keeps them as JSON objects. So a
//! field that resolves to an object is offered to the matcher as its compact JSON text; leaf
//! fields and arrays are passed through unchanged. Everything else is `JsonEvent`'s dotted-path
//! lookup.

use rsigma_eval::event::{Event, EventValue, JsonEvent};
use serde_json::Value;
use std::borrow::Cow;

/// A CloudTrail record as a Sigma event.
pub(super) struct RecordEvent<'a>(pub JsonEvent<'a>);

impl Event for RecordEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        match self.0.get_field(path)? {
            map @ EventValue::Map(_) => {
                Some(EventValue::Str(Cow::Owned(map.to_json().to_string())))
            }
            other => Some(other),
        }
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.0.any_string_value(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.0.all_string_values()
    }

    fn to_json(&self) -> Value {
        self.0.to_json()
    }
}
