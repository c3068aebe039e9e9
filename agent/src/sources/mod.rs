//! Host sources; each turns raw input into CloudTrail records.
