//! A seeded, deterministic generator of realistic CloudTrail records.
//!
//! The shapes follow real AWS trails (the member order, nesting and typical values of what
//! CloudTrail writes): EC2 `RunInstances` with its nested `instancesSet` and the long
//! `responseElements`, `DescribeInstances` with filter sets, S3 `GetObject`/`PutObject` data
//! events with `resources` and `additionalEventData`, IAM `CreateUser`, `AttachRolePolicy` and
//! `PutRolePolicy` (policy documents of varying size), STS `AssumeRole` (the response carries
//! the session credentials without the secret key, as CloudTrail writes them), KMS `Decrypt`
//! called by AWS services, console sign-ins, and Groundtrail's own host sources (sshd logins,
//! sudo commands, package installs). Sizes spread over 0.5 to 5 KB of compact JSON.
//!
//! Everything but `eventTime` depends only on the seed. A [`Template`] knows where its
//! `eventID` sits, so fresh copies with new IDs cost a copy and 36 bytes.

use serde_json::{Map, Value, json};

/// Accounts the records are written for (a two-account trail).
pub const ACCOUNTS: [&str; 2] = ["111122223333", "444455556666"];
/// Regions, weighted towards us-east-1 as in most trails.
const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-east-1",
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
];

/// SplitMix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }

    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[self.next_u64() as usize % alphabet.len()] as char)
            .collect()
    }

    pub fn hex(&mut self, n: usize) -> String {
        self.chars(b"0123456789abcdef", n)
    }

    /// Upper-case letters and digits, as in access key and principal IDs.
    pub fn upper(&mut self, n: usize) -> String {
        self.chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", n)
    }

    pub fn b64(&mut self, n: usize) -> String {
        self.chars(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            n,
        )
    }

    /// A lowercase v4 UUID.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(b)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.pick(&[10u64, 172, 192, 203, 198, 52, 34]),
            self.range(0, 255),
            self.range(0, 255),
            self.range(1, 254)
        )
    }
}

/// One generated record as compact JSON, and where its `eventID` value sits.
#[derive(Debug, Clone)]
pub struct Template {
    pub json: Vec<u8>,
    id_at: usize,
    /// Where its `eventTime` value (20 characters, `YYYY-MM-DDTHH:MM:SSZ`) sits.
    time_at: usize,
    /// `eventSource` (for the mix summary).
    pub source: String,
    pub account: String,
    pub region: String,
}

impl Template {
    fn new(v: &Value) -> Template {
        let json = serde_json::to_vec(v).expect("a Value serializes");
        let marker = b"\"eventID\":\"";
        let at = json
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("every record has an eventID")
            + marker.len();
        let marker = b"\"eventTime\":\"";
        let time_at = json
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("every record has an eventTime")
            + marker.len();
        assert_eq!(
            json.get(time_at + 19),
            Some(&b'Z'),
            "eventTime of 20 characters"
        );
        Template {
            json,
            id_at: at,
            time_at,
            source: v["eventSource"].as_str().unwrap_or_default().to_string(),
            account: v["recipientAccountId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            region: v["awsRegion"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The record with `event_id` (a 36-character UUID) in place of its own.
    pub fn with_id(&self, event_id: &str) -> Vec<u8> {
        assert_eq!(event_id.len(), 36);
        let mut out = self.json.clone();
        out[self.id_at..self.id_at + 36].copy_from_slice(event_id.as_bytes());
        out
    }

    /// The record with `event_id` (as [`Template::with_id`]) and `eventTime` at `secs` (epoch
    /// seconds): a new event of the same shape, for filling an event history over days.
    pub fn with_id_at(&self, event_id: &str, secs: i64) -> Vec<u8> {
        let mut out = self.with_id(event_id);
        let time = time_str(secs);
        assert_eq!(time.len(), 20);
        out[self.time_at..self.time_at + 20].copy_from_slice(time.as_bytes());
        out
    }

    pub fn event_id(&self) -> &str {
        std::str::from_utf8(&self.json[self.id_at..self.id_at + 36]).expect("ASCII")
    }

    /// This record as the `eventData` of a PutAuditEvents call for `account`: what an
    /// in-house platform that mirrors an AWS-shaped API would post (its own event source; the
    /// caller's identity, parameters and response as they are).
    pub fn app_event_data(&self, account: &str) -> String {
        let v: Value = serde_json::from_slice(&self.json).expect("own JSON");
        let source = v["eventSource"]
            .as_str()
            .unwrap_or("app")
            .replace(".amazonaws.com", ".platform.example.com")
            // The agent's own sources (`sshd.onprem.internal`, ...) are reserved: an
            // application posting them is refused (InvalidEventSource).
            .replace(".onprem.internal", ".app.example.com");
        let mut ui = v["userIdentity"].as_object().cloned().unwrap_or_default();
        let typ = ui.remove("type").unwrap_or(json!("AppUser"));
        let principal = ui
            .remove("principalId")
            .or_else(|| ui.get("invokedBy").cloned())
            .unwrap_or(json!("service"));
        let mut d = Map::new();
        d.insert("version".into(), json!("1.0"));
        d.insert(
            "userIdentity".into(),
            json!({"type": typ, "principalId": principal, "details": ui}),
        );
        for k in ["userAgent"] {
            if let Some(x) = v.get(k) {
                d.insert(k.into(), x.clone());
            }
        }
        d.insert("eventSource".into(), json!(source));
        d.insert("eventName".into(), v["eventName"].clone());
        d.insert("eventTime".into(), v["eventTime"].clone());
        d.insert("UID".into(), json!(v["eventID"].as_str().unwrap_or("uid")));
        for k in [
            "requestParameters",
            "responseElements",
            "additionalEventData",
            "errorCode",
            "errorMessage",
            "sourceIPAddress",
        ] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                d.insert(k.into(), x.clone());
            }
        }
        d.insert("recipientAccountId".into(), json!(account));
        Value::Object(d).to_string()
    }
}

/// What the generator made, for the report: sizes and the mix of event sources.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SizeSummary {
    pub records: usize,
    pub mean_bytes: f64,
    pub min_bytes: usize,
    pub p10_bytes: usize,
    pub p50_bytes: usize,
    pub p90_bytes: usize,
    pub max_bytes: usize,
    /// Count per 1 KB bucket: `<1K`, `1-2K`, ..., `4-5K`, `>=5K`.
    pub histogram: Vec<(String, usize)>,
    /// Share of records per event source, largest first.
    pub sources: Vec<(String, usize)>,
}

impl SizeSummary {
    pub fn of(templates: &[Template]) -> SizeSummary {
        let mut sizes: Vec<usize> = templates.iter().map(|t| t.json.len()).collect();
        sizes.sort_unstable();
        let q = |p: f64| sizes[((sizes.len() - 1) as f64 * p).round() as usize];
        let labels = ["<1K", "1-2K", "2-3K", "3-4K", "4-5K", ">=5K"];
        let mut histogram: Vec<(String, usize)> =
            labels.iter().map(|l| (l.to_string(), 0)).collect();
        for &s in &sizes {
            histogram[(s / 1000).min(5)].1 += 1;
        }
        let mut by_source = std::collections::BTreeMap::<String, usize>::new();
        for t in templates {
            *by_source.entry(t.source.clone()).or_default() += 1;
        }
        let mut sources: Vec<(String, usize)> = by_source.into_iter().collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        SizeSummary {
            records: sizes.len(),
            mean_bytes: sizes.iter().sum::<usize>() as f64 / sizes.len() as f64,
            min_bytes: sizes[0],
            p10_bytes: q(0.10),
            p50_bytes: q(0.50),
            p90_bytes: q(0.90),
            max_bytes: *sizes.last().expect("not empty"),
            histogram,
            sources,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        let hist: Vec<String> = self
            .histogram
            .iter()
            .map(|(l, n)| format!("{l} {:.0}%", 100.0 * *n as f64 / self.records as f64))
            .collect();
        let src: Vec<String> = self
            .sources
            .iter()
            .map(|(s, n)| format!("{s} {:.0}%", 100.0 * *n as f64 / self.records as f64))
            .collect();
        vec![
            format!(
                "generated {} distinct records: mean {:.0} B, min {} B, p10 {} B, p50 {} B, p90 {} B, max {} B",
                self.records,
                self.mean_bytes,
                self.min_bytes,
                self.p10_bytes,
                self.p50_bytes,
                self.p90_bytes,
                self.max_bytes
            ),
            format!("sizes: {}", hist.join(", ")),
            format!("sources: {}", src.join(", ")),
        ]
    }
}

/// Generates `n` records from `seed`, with `eventTime`s in the minute before `now_secs`.
pub fn generate(seed: u64, n: usize, now_secs: i64) -> Vec<Template> {
    let mut rng = Rng::new(seed);
    let ctx = Context::new(&mut rng);
    (0..n)
        .map(|_| {
            let t = now_secs - rng.range(0, 59) as i64;
            let v = one(&mut rng, &ctx, t);
            Template::new(&v)
        })
        .collect()
}

/// Names that recur across records, as in a real account: a few users, roles, buckets, keys.
struct Context {
    users: Vec<String>,
    roles: Vec<String>,
    buckets: Vec<String>,
    kms_keys: Vec<String>,
    hosts: Vec<String>,
    amis: Vec<String>,
    subnets: Vec<(String, String)>,
    groups: Vec<String>,
}

impl Context {
    fn new(rng: &mut Rng) -> Context {
        let first = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        ];
        Context {
            users: first.iter().map(|s| s.to_string()).collect(),
            roles: [
                "OrganizationAccountAccessRole",
                "AWSReservedSSO_AdministratorAccess_5f1c2d3e4a5b6c7d",
                "AWSReservedSSO_ReadOnlyAccess_0a1b2c3d4e5f6a7b",
                "github-actions-deploy",
                "eks-node-group-NodeInstanceRole-1A2B3C4D5E6F",
                "lambda-orders-processor-role",
                "terraform-apply",
                "DatadogIntegrationRole",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            buckets: [
                "acme-prod-data-lake",
                "acme-prod-app-assets",
                "acme-logs-archive-111122223333",
                "acme-ml-training-sets",
                "cf-templates-1x2y3z4w5v6u-us-east-1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            kms_keys: (0..4).map(|_| rng.uuid()).collect(),
            hosts: (0..6).map(|i| format!("web-{}", i + 1)).collect(),
            amis: (0..5).map(|_| format!("ami-0{}", rng.hex(16))).collect(),
            subnets: (0..4)
                .map(|_| {
                    (
                        format!("subnet-0{}", rng.hex(16)),
                        format!("vpc-0{}", rng.hex(16)),
                    )
                })
                .collect(),
            groups: (0..4).map(|_| format!("sg-0{}", rng.hex(16))).collect(),
        }
    }
}

const USER_AGENTS: [&str; 6] = [
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22 prompt/off command/ec2.run-instances",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.79-99.164.amzn2023.x86_64 md/arch#x86_64 lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.69",
    "aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64 api/s3#1.51.4",
    "APN/1.0 HashiCorp/1.0 Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.40.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.25.2 os/linux lang/go#1.21.8 md/GOOS#linux md/GOARCH#amd64",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488 Linux/5.10.213-179.855.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.372-b08 java/1.8.0_372 vendor/Oracle_Corporation cfg/retry-mode/standard]",
    "aws-sdk-java/2.25.11 Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10 vendor/Amazon.com_Inc. exec-env/AWS_ECS_FARGATE io/sync http/Apache cfg/retry-mode/standard",
];

fn time_str(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// CloudTrail's odd date format in IAM/STS response elements.
fn console_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .format("%b %-d, %Y, %-I:%M:%S %p")
        .to_string()
}

fn identity(rng: &mut Rng, ctx: &Context, account: &str, t: i64) -> Value {
    if rng.chance(0.3) {
        let user = rng.pick(&ctx.users).clone();
        json!({
            "type": "IAMUser",
            "principalId": format!("AIDA{}", rng.upper(17)),
            "arn": format!("arn:aws:iam::{account}:user/{user}"),
            "accountId": account,
            "accessKeyId": format!("AKIA{}", rng.upper(16)),
            "userName": user,
        })
    } else {
        let role = rng.pick(&ctx.roles).clone();
        let session = if role.starts_with("AWSReservedSSO") {
            format!("{}@example.com", rng.pick(&ctx.users))
        } else {
            format!("{}", rng.range(1_700_000_000_000, 1_800_000_000_000))
        };
        let role_id = format!("AROA{}", rng.upper(17));
        json!({
            "type": "AssumedRole",
            "principalId": format!("{role_id}:{session}"),
            "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
            "accountId": account,
            "accessKeyId": format!("ASIA{}", rng.upper(16)),
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": format!("arn:aws:iam::{account}:role/{role}"),
                    "accountId": account,
                    "userName": role,
                },
                "webIdFederationData": {},
                "attributes": {
                    "creationDate": time_str(t - rng.range(60, 3000) as i64),
                    "mfaAuthenticated": if rng.chance(0.3) { "true" } else { "false" },
                },
            },
        })
    }
}

fn tls(host: String) -> Value {
    json!({
        "tlsVersion": "TLSv1.3",
        "cipherSuite": "TLS_AES_128_GCM_SHA256",
        "clientProvidedHostHeader": host,
    })
}

/// The members every AWS API record has, in CloudTrail's order; `body` fills the middle.
#[allow(clippy::too_many_arguments)]
fn api_record(
    rng: &mut Rng,
    ctx: &Context,
    t: i64,
    account: &str,
    region: &str,
    source: &str,
    name: &str,
    user_identity: Value,
    request: Value,
    response: Value,
    tail: Map<String, Value>,
    read_only: bool,
    management: bool,
) -> Value {
    let mut m = Map::new();
    m.insert("eventVersion".into(), json!("1.10"));
    m.insert("userIdentity".into(), user_identity);
    m.insert("eventTime".into(), json!(time_str(t)));
    m.insert("eventSource".into(), json!(source));
    m.insert("eventName".into(), json!(name));
    m.insert("awsRegion".into(), json!(region));
    m.insert("sourceIPAddress".into(), json!(rng.ip()));
    m.insert("userAgent".into(), json!(*rng.pick(&USER_AGENTS)));
    m.insert("requestParameters".into(), request);
    m.insert("responseElements".into(), response);
    let request_id = if source == "s3.amazonaws.com" {
        rng.upper(16)
    } else {
        rng.uuid()
    };
    m.insert("requestID".into(), json!(request_id));
    m.insert("eventID".into(), json!(rng.uuid()));
    m.insert("readOnly".into(), json!(read_only));
    for (k, v) in tail {
        m.insert(k, v);
    }
    m.insert("eventType".into(), json!("AwsApiCall"));
    m.insert("managementEvent".into(), json!(management));
    m.insert("recipientAccountId".into(), json!(account));
    m.insert(
        "eventCategory".into(),
        json!(if management { "Management" } else { "Data" }),
    );
    let host = source.replace(".amazonaws.com", &format!(".{region}.amazonaws.com"));
    m.insert("tlsDetails".into(), tls(host));
    let _ = ctx;
    Value::Object(m)
}

fn tags(rng: &mut Rng, n: u64) -> Vec<Value> {
    let keys = [
        "Name",
        "Environment",
        "Owner",
        "CostCenter",
        "Application",
        "ManagedBy",
        "Team",
        "DataClassification",
    ];
    (0..n)
        .map(|i| {
            let k = keys[i as usize % keys.len()];
            let v = match k {
                "Name" => format!("orders-api-{}", rng.hex(4)),
                "Environment" => rng.pick(&["production", "staging", "dev"]).to_string(),
                "ManagedBy" => "terraform".to_string(),
                _ => format!("{}-{}", k.to_lowercase(), rng.range(100, 999)),
            };
            json!({"key": k, "value": v})
        })
        .collect()
}

fn one(rng: &mut Rng, ctx: &Context, t: i64) -> Value {
    let account = *rng.pick(&ACCOUNTS);
    let region = *rng.pick(&REGIONS);
    // Weights roughly as in a busy production trail with S3 data events on.
    match rng.range(0, 99) {
        0..=29 => s3_object(rng, ctx, t, account, region),
        30..=44 => kms_decrypt(rng, ctx, t, account, region),
        45..=54 => sts_assume_role(rng, ctx, t, account, region),
        55..=62 => ec2_describe(rng, ctx, t, account, region),
        63..=67 => ec2_run_instances(rng, ctx, t, account, region),
        68..=70 => iam_create_user(rng, ctx, t, account),
        71..=73 => iam_attach_role_policy(rng, ctx, t, account),
        74..=76 => iam_put_role_policy(rng, ctx, t, account),
        77..=78 => console_login(rng, ctx, t, account),
        79..=88 => host_sshd(rng, ctx, t, account, region),
        89..=96 => host_sudo(rng, ctx, t, account, region),
        _ => host_package(rng, ctx, t, account, region),
    }
}

fn s3_object(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let bucket = rng.pick(&ctx.buckets).clone();
    let depth = rng.range(1, 5);
    let mut key: Vec<String> = (0..depth)
        .map(|_| {
            format!(
                "{}={}",
                rng.pick(&["year", "month", "day", "tenant", "dt", "part"]),
                rng.range(1, 2026)
            )
        })
        .collect();
    key.push(format!(
        "part-{:05}-{}.c000.snappy.parquet",
        rng.range(0, 999),
        rng.uuid()
    ));
    let key = key.join("/");
    let put = rng.chance(0.35);
    let name = if put { "PutObject" } else { "GetObject" };
    let host = format!("{bucket}.s3.{region}.amazonaws.com");
    let kms = format!(
        "arn:aws:kms:{region}:{account}:key/{}",
        rng.pick(&ctx.kms_keys)
    );
    let (request, response) = if put {
        (
            json!({"bucketName": bucket, "Host": host, "key": key,
                   "x-amz-server-side-encryption": "aws:kms",
                   "x-amz-server-side-encryption-aws-kms-key-id": kms,
                   "x-amz-checksum-crc32": format!("{}==", rng.b64(6))}),
            json!({"x-amz-server-side-encryption-aws-kms-key-id": kms,
                   "x-amz-server-side-encryption": "aws:kms",
                   "x-amz-server-side-encryption-bucket-key-enabled": true,
                   "x-amz-version-id": rng.b64(32)}),
        )
    } else {
        (
            json!({"bucketName": bucket, "Host": host, "key": key}),
            Value::Null,
        )
    };
    let size = rng.range(200, 50_000_000);
    let mut tail = Map::new();
    tail.insert(
        "additionalEventData".into(),
        json!({
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": if put { size } else { 0 },
            "SSEApplied": if put { "SSE_KMS" } else { "Default_SSE_S3" },
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": rng.b64(76),
            "bytesTransferredOut": if put { 0 } else { size },
        }),
    );
    tail.insert(
        "resources".into(),
        json!([
            {"type": "AWS::S3::Object", "ARN": format!("arn:aws:s3:::{bucket}/{key}")},
            {"accountId": account, "type": "AWS::S3::Bucket", "ARN": format!("arn:aws:s3:::{bucket}")}
        ]),
    );
    if rng.chance(0.4) {
        tail.insert(
            "vpcEndpointId".into(),
            json!(format!("vpce-0{}", rng.hex(16))),
        );
        tail.insert("vpcEndpointAccountId".into(), json!(account));
    }
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        region,
        "s3.amazonaws.com",
        name,
        ui,
        request,
        response,
        tail,
        !put,
        false,
    )
}

fn kms_decrypt(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let key = format!(
        "arn:aws:kms:{region}:{account}:key/{}",
        rng.pick(&ctx.kms_keys)
    );
    let by_service = rng.chance(0.6);
    let (ui, context) = if by_service {
        let svc = *rng.pick(&[
            "secretsmanager.amazonaws.com",
            "lambda.amazonaws.com",
            "s3.amazonaws.com",
            "ebs.amazonaws.com",
        ]);
        let mut ui = identity(rng, ctx, account, t);
        ui["invokedBy"] = json!(svc);
        let context = match svc {
            "secretsmanager.amazonaws.com" => json!({
                "SecretARN": format!("arn:aws:secretsmanager:{region}:{account}:secret:prod/orders/db-{}", rng.b64(6)),
                "SecretVersionId": rng.uuid()}),
            "lambda.amazonaws.com" => json!({
                "aws:lambda:FunctionArn": format!("arn:aws:lambda:{region}:{account}:function:orders-processor-{}", rng.hex(6))}),
            "s3.amazonaws.com" => json!({
                "aws:s3:arn": format!("arn:aws:s3:::{}", rng.pick(&ctx.buckets))}),
            _ => json!({
                "aws:ebs:id": format!("vol-0{}", rng.hex(16))}),
        };
        (ui, context)
    } else {
        (
            identity(rng, ctx, account, t),
            json!({"aws:ebs:id": format!("vol-0{}", rng.hex(16))}),
        )
    };
    let mut tail = Map::new();
    tail.insert(
        "resources".into(),
        json!([{"accountId": account, "type": "AWS::KMS::Key", "ARN": key}]),
    );
    tail.insert("sharedEventID".into(), json!(rng.uuid()));
    api_record(
        rng,
        ctx,
        t,
        account,
        region,
        "kms.amazonaws.com",
        "Decrypt",
        ui,
        json!({"encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
        Value::Null,
        tail,
        true,
        true,
    )
}

fn sts_assume_role(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let role = rng.pick(&ctx.roles).clone();
    let session = format!("{}-{}", rng.pick(&ctx.users), rng.range(1000, 9999));
    let role_arn = format!("arn:aws:iam::{account}:role/{role}");
    let mut request =
        json!({"roleArn": role_arn, "roleSessionName": session, "durationSeconds": 3600});
    if rng.chance(0.3) {
        request["externalId"] = json!(rng.hex(32));
    }
    if rng.chance(0.3) {
        request["tags"] = json!(
            tags(rng, 2)
                .into_iter()
                .map(|t| json!({"key": t["key"], "value": t["value"]}))
                .collect::<Vec<_>>()
        );
    }
    // CloudTrail logs the session credentials without the secret access key; the session
    // token is a long opaque blob (its size varies with session tags and policies).
    let token_len = rng.range(400, 1100) as usize;
    let role_id = format!("AROA{}", rng.upper(17));
    let response = json!({
        "credentials": {
            "accessKeyId": format!("ASIA{}", rng.upper(16)),
            "sessionToken": format!("IQoJb3JpZ2luX2Vj{}", rng.b64(token_len)),
            "expiration": console_date(t + 3600),
        },
        "assumedRoleUser": {
            "assumedRoleId": format!("{role_id}:{session}"),
            "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
        },
    });
    let mut tail = Map::new();
    tail.insert(
        "resources".into(),
        json!([{"accountId": account, "type": "AWS::IAM::Role", "ARN": role_arn}]),
    );
    tail.insert("sharedEventID".into(), json!(rng.uuid()));
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        region,
        "sts.amazonaws.com",
        "AssumeRole",
        ui,
        request,
        response,
        tail,
        false,
        true,
    )
}

fn ec2_describe(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let n = rng.range(0, 4);
    let filters: Vec<Value> = (0..n)
        .map(|i| {
            let (name, values): (&str, Vec<String>) = match i {
                0 => (
                    "instance-state-name",
                    vec!["running".into(), "pending".into()],
                ),
                1 => ("tag:Environment", vec!["production".into()]),
                2 => (
                    "vpc-id",
                    vec![rng.pick(&ctx.subnets).1.clone()],
                ),
                _ => (
                    "instance-id",
                    (0..rng.range(1, 6))
                        .map(|_| format!("i-0{}", rng.hex(16)))
                        .collect(),
                ),
            };
            json!({"name": name, "valueSet": {"items": values.into_iter().map(|v| json!({"value": v})).collect::<Vec<_>>()}})
        })
        .collect();
    let request = json!({"instancesSet": {}, "filterSet": {"items": filters}, "maxResults": 1000});
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        region,
        "ec2.amazonaws.com",
        "DescribeInstances",
        ui,
        request,
        Value::Null,
        Map::new(),
        true,
        true,
    )
}

fn ec2_run_instances(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    // One instance per call (two would pass 5 KB; real multi-instance launches do).
    let count = 1;
    let ami = rng.pick(&ctx.amis).clone();
    let itype = *rng.pick(&["t3.micro", "m6i.large", "c7g.xlarge", "r6i.2xlarge"]);
    let (subnet, vpc) = rng.pick(&ctx.subnets).clone();
    let sg = rng.pick(&ctx.groups).clone();
    let az = format!("{region}{}", rng.pick(&["a", "b", "c"]));
    let n_tags = rng.range(1, 3);
    let tagset = tags(rng, n_tags);
    let token = rng.uuid();
    let profile = format!("arn:aws:iam::{account}:instance-profile/orders-api");
    let request = json!({
        "instancesSet": {"items": [{"imageId": ami, "minCount": count, "maxCount": count}]},
        "instanceType": itype,
        "blockDeviceMapping": {},
        "availabilityZone": az,
        "monitoring": {"enabled": false},
        "disableApiTermination": false,
        "disableApiStop": false,
        "clientToken": token,
        "networkInterfaceSet": {"items": [{"deviceIndex": 0, "subnetId": subnet,
            "associatePublicIpAddress": false, "groupSet": {"items": [{"groupId": sg}]}}]},
        "iamInstanceProfile": {"arn": profile},
        "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": tagset}]},
        "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
    });
    let launch_ms = t * 1000;
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let ip = format!("10.0.{}.{}", rng.range(0, 255), rng.range(1, 254));
            let dns = format!("ip-{}.ec2.internal", ip.replace('.', "-"));
            json!({
                "instanceId": format!("i-0{}", rng.hex(16)),
                "imageId": ami,
                "currentInstanceBootMode": "legacy-bios",
                "instanceState": {"code": 0, "name": "pending"},
                "privateDnsName": dns,
                "amiLaunchIndex": i,
                "productCodes": {},
                "instanceType": itype,
                "launchTime": launch_ms,
                "placement": {"availabilityZone": az, "tenancy": "default"},
                "monitoring": {"state": "disabled"},
                "subnetId": subnet,
                "vpcId": vpc,
                "privateIpAddress": ip,
                "stateReason": {"code": "pending", "message": "pending"},
                "architecture": "x86_64",
                "rootDeviceType": "ebs",
                "rootDeviceName": "/dev/xvda",
                "blockDeviceMapping": {},
                "virtualizationType": "hvm",
                "hypervisor": "xen",
                "tagSet": {"items": tagset},
                "clientToken": token,
                "groupSet": {"items": [{"groupId": sg, "groupName": "orders-api"}]},
                "sourceDestCheck": true,
                "networkInterfaceSet": {"items": [{
                    "networkInterfaceId": format!("eni-0{}", rng.hex(16)),
                    "subnetId": subnet, "vpcId": vpc, "ownerId": account, "status": "in-use",
                    "macAddress": format!("0e:{}:{}:{}:{}:{}", rng.hex(2), rng.hex(2), rng.hex(2), rng.hex(2), rng.hex(2)),
                    "privateIpAddress": ip, "privateDnsName": dns, "sourceDestCheck": true,
                    "interfaceType": "interface",
                    "groupSet": {"items": [{"groupId": sg, "groupName": "orders-api"}]},
                    "attachment": {"attachmentId": format!("eni-attach-0{}", rng.hex(16)), "deviceIndex": 0,
                        "networkCardIndex": 0, "status": "attaching", "attachTime": launch_ms,
                        "deleteOnTermination": true},
                    "privateIpAddressesSet": {"item": [{"privateIpAddress": ip, "privateDnsName": dns, "primary": true}]},
                    "ipv6AddressesSet": {},
                    "tagSet": {}
                }]},
                "iamInstanceProfile": {"arn": profile, "id": format!("AIPA{}", rng.upper(17))},
                "ebsOptimized": false,
                "enaSupport": true,
                "cpuOptions": {"coreCount": 1, "threadsPerCore": 2},
                "capacityReservationSpecification": {"capacityReservationPreference": "open"},
                "enclaveOptions": {"enabled": false},
                "metadataOptions": {"state": "pending", "httpTokens": "required",
                    "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled",
                    "httpProtocolIpv4": "enabled", "httpProtocolIpv6": "disabled",
                    "instanceMetadataTags": "disabled"},
                "maintenanceOptions": {"autoRecovery": "default"},
                "privateDnsNameOptions": {"hostnameType": "ip-name",
                    "enableResourceNameDnsARecord": false, "enableResourceNameDnsAAAARecord": false},
            })
        })
        .collect();
    let response = json!({
        "requestId": rng.uuid(),
        "reservationId": format!("r-0{}", rng.hex(16)),
        "ownerId": account,
        "groupSet": {},
        "instancesSet": {"items": items},
    });
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        region,
        "ec2.amazonaws.com",
        "RunInstances",
        ui,
        request,
        response,
        Map::new(),
        false,
        true,
    )
}

fn iam_create_user(rng: &mut Rng, ctx: &Context, t: i64, account: &str) -> Value {
    let user = format!("svc-{}-{}", rng.pick(&ctx.users), rng.range(10, 99));
    let n_tags = rng.range(0, 3);
    let tagset = tags(rng, n_tags);
    let request = json!({"userName": user, "path": "/", "tags": tagset});
    let response = json!({"user": {
        "path": "/", "userName": user, "userId": format!("AIDA{}", rng.upper(17)),
        "arn": format!("arn:aws:iam::{account}:user/{user}"),
        "createDate": console_date(t), "tags": tagset}});
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        "us-east-1",
        "iam.amazonaws.com",
        "CreateUser",
        ui,
        request,
        response,
        Map::new(),
        false,
        true,
    )
}

fn iam_attach_role_policy(rng: &mut Rng, ctx: &Context, t: i64, account: &str) -> Value {
    let role = rng.pick(&ctx.roles).clone();
    let policy = *rng.pick(&[
        "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    ]);
    let ui = identity(rng, ctx, account, t);
    api_record(
        rng,
        ctx,
        t,
        account,
        "us-east-1",
        "iam.amazonaws.com",
        "AttachRolePolicy",
        ui,
        json!({"roleName": role, "policyArn": policy}),
        Value::Null,
        Map::new(),
        false,
        true,
    )
}

fn iam_put_role_policy(rng: &mut Rng, ctx: &Context, t: i64, account: &str) -> Value {
    let role = rng.pick(&ctx.roles).clone();
    let statements: Vec<Value> = (0..rng.range(1, 5))
        .map(|i| {
            let bucket = rng.pick(&ctx.buckets).clone();
            let actions = &[
                "s3:GetObject",
                "s3:PutObject",
                "s3:ListBucket",
                "kms:Decrypt",
                "kms:GenerateDataKey",
            ][..rng.range(1, 5) as usize];
            json!({
                "Sid": format!("Stmt{}{}", rng.range(1_000_000, 9_999_999), i),
                "Effect": "Allow",
                "Action": actions,
                "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": format!("o-{}", rng.hex(10))}}
            })
        })
        .collect();
    // CloudTrail writes the policy document as the (pretty-printed) string that was sent.
    let doc =
        serde_json::to_string_pretty(&json!({"Version": "2012-10-17", "Statement": statements}))
            .expect("JSON");
    let ui = identity(rng, ctx, account, t);
    let request = json!({"roleName": role, "policyName": format!("inline-{}", rng.hex(6)), "policyDocument": doc});
    api_record(
        rng,
        ctx,
        t,
        account,
        "us-east-1",
        "iam.amazonaws.com",
        "PutRolePolicy",
        ui,
        request,
        Value::Null,
        Map::new(),
        false,
        true,
    )
}

fn console_login(rng: &mut Rng, ctx: &Context, t: i64, account: &str) -> Value {
    let user = rng.pick(&ctx.users).clone();
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": format!("AIDA{}", rng.upper(17)),
            "arn": format!("arn:aws:iam::{account}:user/{user}"), "accountId": account, "userName": user},
        "eventTime": time_str(t),
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1",
        "sourceIPAddress": rng.ip(),
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        "requestParameters": null,
        "responseElements": {"ConsoleLogin": "Success"},
        "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_us-east-1_a1b2c3d4e5f6a7b8",
            "MobileVersion": "No", "MFAIdentifier": format!("arn:aws:iam::{account}:mfa/{user}"), "MFAUsed": "Yes"},
        "eventID": rng.uuid(),
        "readOnly": false,
        "eventType": "AwsConsoleSignIn",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "tlsDetails": tls("signin.aws.amazon.com".into()),
    })
}

/// Groundtrail's own host records (see DESIGN.md's table): the agent's shapes.
fn host_identity(rng: &mut Rng, ctx: &Context, account: &str, host: &str) -> (Value, String) {
    let user = rng.pick(&ctx.users).clone();
    (
        json!({"type": "IAMUser", "principalId": format!("{}", rng.range(1000, 1100)),
               "arn": format!("arn:aws:iam::{account}:user/{host}/{user}"),
               "accountId": account, "userName": user}),
        user,
    )
}

#[allow(clippy::too_many_arguments)]
fn host_record(
    rng: &mut Rng,
    t: i64,
    account: &str,
    region: &str,
    source: &str,
    name: &str,
    event_type: &str,
    ui: Value,
    request: Value,
    response: Value,
    resources: Value,
) -> Value {
    json!({
        "eventVersion": "1.11",
        "userIdentity": ui,
        "eventTime": time_str(t),
        "eventSource": format!("{source}.onprem.internal"),
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": rng.ip(),
        "userAgent": source,
        "requestParameters": request,
        "responseElements": response,
        "eventID": rng.uuid(),
        "readOnly": false,
        "resources": resources,
        "eventType": event_type,
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    })
}

fn host_sshd(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let host = rng.pick(&ctx.hosts).clone();
    let (ui, user) = host_identity(rng, ctx, account, &host);
    let ok = rng.chance(0.8);
    let request = json!({"host": host, "method": *rng.pick(&["publickey", "password", "keyboard-interactive/pam"]),
               "port": rng.range(30000, 65000), "pid": rng.range(1000, 99999),
               "key": format!("ED25519 SHA256:{}", rng.b64(43)), "tty": "ssh"});
    let mut r = host_record(
        rng,
        t,
        account,
        region,
        "sshd",
        "ConsoleLogin",
        "AwsConsoleSignIn",
        ui,
        request,
        json!({"ConsoleLogin": if ok { "Success" } else { "Failure" }}),
        json!([{"type": "AWS::EC2::Instance", "ARN": format!("arn:aws:ec2:{region}:{account}:instance/{host}")}]),
    );
    if !ok {
        r["errorMessage"] = json!(format!("Failed password for {user}"));
    }
    r
}

fn host_sudo(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let host = rng.pick(&ctx.hosts).clone();
    let (mut ui, user) = host_identity(rng, ctx, account, &host);
    ui["type"] = json!("AssumedRole");
    ui["arn"] = json!(format!("arn:aws:sts::{account}:assumed-role/root/{user}"));
    ui["sessionContext"] = json!({"sessionIssuer": {"type": "Role", "principalId": "0",
        "arn": format!("arn:aws:iam::{account}:role/{host}/root"), "accountId": account, "userName": "root"},
        "attributes": {"creationDate": time_str(t), "mfaAuthenticated": "false"}});
    let cmd = rng
        .pick(&[
            "/usr/bin/systemctl restart nginx",
            "/usr/bin/apt-get install -y --no-install-recommends postgresql-client-16",
            "/usr/bin/journalctl -u orders-api --since -1h --no-pager",
            "/usr/bin/vim /etc/nginx/sites-available/orders.conf",
            "/usr/sbin/usermod -aG docker deploy",
            "/usr/bin/docker compose -f /srv/orders/docker-compose.yml up -d --remove-orphans",
        ])
        .to_string();
    let request = json!({"host": host, "command": cmd, "cwd": format!("/home/{user}"), "tty": format!("pts/{}", rng.range(0, 9)),
               "runAs": "root", "pid": rng.range(1000, 99999)});
    host_record(
        rng,
        t,
        account,
        region,
        "sudo",
        "RunCommand",
        "AwsApiCall",
        ui,
        request,
        Value::Null,
        json!([{"type": "AWS::EC2::Instance", "ARN": format!("arn:aws:ec2:{region}:{account}:instance/{host}")}]),
    )
}

fn host_package(rng: &mut Rng, ctx: &Context, t: i64, account: &str, region: &str) -> Value {
    let host = rng.pick(&ctx.hosts).clone();
    let pkg = *rng.pick(&[
        "openssl",
        "nginx",
        "libc6",
        "openssh-server",
        "curl",
        "sudo",
    ]);
    let version = format!(
        "{}.{}.{}-{}ubuntu{}",
        rng.range(1, 3),
        rng.range(0, 20),
        rng.range(0, 9),
        rng.range(1, 9),
        rng.range(1, 5)
    );
    host_record(
        rng,
        t,
        account,
        region,
        "packages",
        "UpgradePackage",
        "AwsApiCall",
        json!({"type": "AWSService", "invokedBy": "dpkg"}),
        json!({"host": host, "package": pkg, "architecture": "amd64", "version": version,
               "previousVersion": "1.0.0-1ubuntu1", "manager": "dpkg"}),
        Value::Null,
        json!([{"type": "Package", "ARN": format!("arn:aws:packages:{region}:{account}:package/{host}/{pkg}")}]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_and_in_size_range() {
        let a = generate(7, 2000, 1_780_000_000);
        let b = generate(7, 2000, 1_780_000_000);
        assert_eq!(
            a.iter().map(|t| &t.json).collect::<Vec<_>>(),
            b.iter().map(|t| &t.json).collect::<Vec<_>>()
        );
        for t in &a {
            let r: groundtrail_common::Record = serde_json::from_slice(&t.json).expect("record");
            r.validate()
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&t.json)));
            assert!(
                (500..=5120).contains(&t.json.len()),
                "{} bytes: {}",
                t.json.len(),
                String::from_utf8_lossy(&t.json)
            );
        }
        let fresh = a[0].with_id("00000000-0000-4000-8000-000000000001");
        let v: Value = serde_json::from_slice(&fresh).unwrap();
        assert_eq!(v["eventID"], "00000000-0000-4000-8000-000000000001");
        for t in &a {
            let moved = t.with_id_at("00000000-0000-4000-8000-000000000002", 1_700_000_061);
            let v: Value = serde_json::from_slice(&moved).unwrap();
            assert_eq!(v["eventTime"], "2023-11-14T22:14:21Z");
            assert_eq!(v["eventID"], "00000000-0000-4000-8000-000000000002");
        }
        let s = SizeSummary::of(&a);
        assert!(s.sources.len() >= 8, "{:?}", s.sources);
    }
}
