//! What AWS IoT Core needs to accept Keel's devices, as files and the
//! exact AWS CLI commands:
//!
//! - just-in-time provisioning (JITP): the device CA registered with a
//!   provisioning template, so a device whose certificate that CA signed
//!   becomes a thing named after the certificate's CN on its first
//!   connection ([`jitp`]);
//! - fleet provisioning by claim: a template that names the thing after
//!   the `SerialNumber` parameter the device sends, and the claim
//!   certificate's policy ([`fleet`]).
//!
//! Both attach the same device policy, which confines each thing to its
//! own topics (as the hub's broker ACL does).

use serde_json::{json, Value};

/// A file to write and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFile {
    pub name: &'static str,
    pub text: String,
}

/// Files plus the commands that use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub files: Vec<SetupFile>,
    pub commands: String,
}

/// Names the generated files and commands use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The device policy every thing gets.
    pub policy: String,
    /// The IAM role AWS IoT assumes to create things.
    pub role: String,
    /// `REGION:ACCOUNT` for ARNs, or placeholders.
    pub region: String,
    pub account: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            policy: "keel-device".into(),
            role: "keel-provisioning".into(),
            region: "REGION".into(),
            account: "ACCOUNT".into(),
        }
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The device policy: connect as its own thing (client id = thing name,
/// as the fleet client does), publish, receive and subscribe only under
/// its own shadow, jobs and presence topics.
pub fn device_policy(n: &Names) -> String {
    let arn =
        |kind: &str, rest: &str| format!("arn:aws:iot:{}:{}:{kind}/{rest}", n.region, n.account);
    let thing = "${iot:Connection.Thing.ThingName}";
    pretty(&json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client", thing)},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
                arn("topic", &format!("$aws/things/{thing}/*")),
                arn("topic", &format!("keel/things/{thing}/*")),
            ]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                arn("topicfilter", &format!("$aws/things/{thing}/*")),
                arn("topicfilter", &format!("keel/things/{thing}/*")),
            ]},
        ]
    }))
}

fn resources(thing_name: Value, n: &Names) -> Value {
    json!({
        "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": thing_name}},
        "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
            "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": n.policy}},
    })
}

/// The JITP template: the thing is named after the certificate's CN,
/// which Keel's device certificates set to the serial.
pub fn jitp_template_body(n: &Names) -> Value {
    json!({
        "Parameters": {
            "AWS::IoT::Certificate::CommonName": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": resources(json!({"Ref": "AWS::IoT::Certificate::CommonName"}), n),
    })
}

fn role_commands(n: &Names) -> String {
    format!(
        "# 1. A role AWS IoT assumes to create things and attach policies (once per account)\n\
         aws iam create-role --role-name {role} --assume-role-policy-document \\\n    \
         '{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Allow\",\"Principal\":{{\"Service\":\"iot.amazonaws.com\"}},\"Action\":\"sts:AssumeRole\"}}]}}'\n\
         aws iam attach-role-policy --role-name {role} \\\n    \
         --policy-arn arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration\n\n\
         # 2. The device policy: each thing reaches only its own topics\n\
         aws iot create-policy --policy-name {policy} --policy-document file://device-policy.json\n",
        role = n.role,
        policy = n.policy,
    )
}

/// Registering the device CA for just-in-time provisioning. `ca_dir` is
/// the CA's directory as the operator names it (`--ca`).
pub fn jitp(n: &Names, ca_dir: &str) -> Setup {
    let body = jitp_template_body(n);
    let registration = json!({
        "templateBody": body.to_string(),
        "roleArn": format!("arn:aws:iam::{}:role/{}", n.account, n.role),
    });
    let commands = format!(
        "{roles}\n\
         # 3. Prove you hold the CA's private key (the account's registration code as CN)\n\
         CODE=$(aws iot get-registration-code --query registrationCode --output text)\n\
         cargo xtask aws verification-cert --ca {ca_dir} --code \"$CODE\" --out verification\n\n\
         # 4. Register the CA, active, with auto-registration and the template\n\
         aws iot register-ca-certificate --ca-certificate file://{ca_dir}/ca.pem \\\n    \
         --verification-cert file://verification/verification.pem \\\n    \
         --set-as-active --allow-auto-registration \\\n    \
         --registration-config file://registration-config.json\n\n\
         # 5. The endpoint for fleet.toml's [mqtt] endpoint, and the broker CA for the cards\n\
         aws iot describe-endpoint --endpoint-type iot:Data-ATS\n\
         curl -o {ca_dir}/server-ca.pem https://www.amazontrust.com/repository/AmazonRootCA1.pem\n\n\
         # Each card burned with --serial then connects on its own: AWS closes its first\n\
         # connection while it creates the thing (named after the certificate's CN),\n\
         # and the fleet client retries 2 s later.\n",
        roles = role_commands(n),
    );
    Setup {
        files: vec![
            SetupFile {
                name: "registration-config.json",
                text: pretty(&registration),
            },
            SetupFile {
                name: "jitp-template.json",
                text: pretty(&body),
            },
            SetupFile {
                name: "device-policy.json",
                text: device_policy(n),
            },
        ],
        commands,
    }
}

/// The fleet provisioning template: the thing is named after the
/// `SerialNumber` parameter the device sends (fleet::provision).
pub fn fleet_template_body(n: &Names) -> Value {
    json!({
        "Parameters": {
            fleet::provision::exchange::SERIAL_PARAMETER: {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": resources(json!({"Ref": fleet::provision::exchange::SERIAL_PARAMETER}), n),
    })
}

/// What the claim certificate may do: connect, and use the two fleet
/// provisioning requests of this template; nothing else.
pub fn claim_policy(n: &Names, template: &str) -> String {
    let arn =
        |kind: &str, rest: &str| format!("arn:aws:iot:{}:{}:{kind}/{rest}", n.region, n.account);
    pretty(&json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
                arn("topic", "$aws/certificates/create-from-csr/*"),
                arn("topic", &format!("$aws/provisioning-templates/{template}/provision/*")),
            ]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                arn("topicfilter", "$aws/certificates/create-from-csr/*"),
                arn("topicfilter", &format!("$aws/provisioning-templates/{template}/provision/*")),
            ]},
        ]
    }))
}

/// Setting up fleet provisioning by claim with template `template`.
pub fn fleet(n: &Names, template: &str) -> Setup {
    let commands = format!(
        "{roles}\n\
         # 3. The template\n\
         aws iot create-provisioning-template --template-name {template} --enabled \\\n    \
         --provisioning-role-arn arn:aws:iam::{account}:role/{role} \\\n    \
         --template-body file://fleet-template.json\n\
         # (Add --pre-provisioning-hook targetArn=LAMBDA_ARN to accept only serials you made.)\n\n\
         # 4. The claim certificate every card of the batch carries, and its policy\n\
         aws iot create-policy --policy-name {template}-claim --policy-document file://claim-policy.json\n\
         mkdir -p claim && aws iot create-keys-and-certificate --set-as-active \\\n    \
         --certificate-pem-outfile claim/claim.pem --private-key-outfile claim/claim.key \\\n    \
         --query certificateArn --output text > claim/arn\n\
         aws iot attach-policy --policy-name {template}-claim --target \"$(cat claim/arn)\"\n\
         curl -o claim/ca.pem https://www.amazontrust.com/repository/AmazonRootCA1.pem\n\n\
         # 5. Cards: the image's fleet.toml has [provisioning] template = \"{template}\";\n\
         cargo xtask burn --board rpi4 --device /dev/sdX --claim claim\n",
        roles = role_commands(n),
        account = n.account,
        role = n.role,
    );
    Setup {
        files: vec![
            SetupFile {
                name: "fleet-template.json",
                text: pretty(&fleet_template_body(n)),
            },
            SetupFile {
                name: "claim-policy.json",
                text: claim_policy(n, template),
            },
            SetupFile {
                name: "device-policy.json",
                text: device_policy(n),
            },
        ],
        commands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jitp_template_names_the_thing_after_the_common_name() {
        let n = Names::default();
        let setup = jitp(&n, "keys/ca/acme");
        let reg: Value = serde_json::from_str(&setup.files[0].text).unwrap();
        // AWS wants the template body as a JSON string inside the JSON.
        let body: Value = serde_json::from_str(reg["templateBody"].as_str().unwrap()).unwrap();
        assert_eq!(
            body["Resources"]["thing"]["Properties"]["ThingName"]["Ref"],
            "AWS::IoT::Certificate::CommonName"
        );
        assert_eq!(
            body["Resources"]["policy"]["Properties"]["PolicyName"],
            "keel-device"
        );
        assert!(setup.commands.contains("register-ca-certificate"));
        assert!(setup.commands.contains("--allow-auto-registration"));
        assert!(setup.commands.contains("file://keys/ca/acme/ca.pem"));
        let policy: Value = serde_json::from_str(&device_policy(&n)).unwrap();
        assert_eq!(
            policy["Statement"][0]["Resource"],
            "arn:aws:iot:REGION:ACCOUNT:client/${iot:Connection.Thing.ThingName}"
        );
    }

    #[test]
    fn the_fleet_template_reads_the_serial_the_device_sends() {
        let n = Names::default();
        let setup = fleet(&n, "keel-fleet");
        let body: Value = serde_json::from_str(&setup.files[0].text).unwrap();
        assert_eq!(
            body["Resources"]["thing"]["Properties"]["ThingName"]["Ref"],
            "SerialNumber"
        );
        let claim = &setup.files[1].text;
        assert!(claim.contains("$aws/provisioning-templates/keel-fleet/provision/*"));
        assert!(
            !claim.contains("$aws/things"),
            "a claim reaches no thing's topics"
        );
    }
}
