//! `groundtrail-collector validate-logs`: the AWS CLI's `cloudtrail validate-logs`, against a
//! local directory or any S3-compatible store. (Being written; the signature is the seam.)

/// Command-line arguments (the AWS CLI's flags plus where to read from).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// ARN of the trail to validate.
    #[arg(long)]
    pub trail_arn: String,
}

/// Runs the validation; returns the process exit code (0 valid, 1 anything invalid).
pub async fn run(args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("validate-logs for {} is not implemented yet", args.trail_arn)
}
