//! The protobuf JSON mapping, generic over every Leadflow message: files (YAML or JSON) into
//! generated messages, generated messages into JSON or YAML, and enum values by name — all
//! through the descriptors in [`leadflow_proto::FILE_DESCRIPTOR_SET`].

use std::path::Path;
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::error::CliError;

/// Every Leadflow contract's descriptors, decoded once.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(leadflow_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

fn pool() -> Result<&'static DescriptorPool, CliError> {
    POOL.as_ref()
        .map_err(|e| CliError::Local(format!("the built-in descriptors do not decode: {e}")))
}

fn descriptor(full_name: &str) -> Result<prost_reflect::MessageDescriptor, CliError> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| CliError::Local(format!("unknown message type {full_name}")))
}

fn dynamic<M: prost::Message>(msg: &M, full_name: &str) -> Result<DynamicMessage, CliError> {
    DynamicMessage::decode(descriptor(full_name)?, msg.encode_to_vec().as_slice())
        .map_err(|e| CliError::Local(format!("cannot re-read a {full_name}: {e}")))
}

/// How scripts want JSON (JSON names, every non-optional field present) or, `for_files`, how a
/// hand-written file looks (proto field names, default values left out).
fn options(for_files: bool) -> SerializeOptions {
    SerializeOptions::new()
        .skip_default_fields(for_files)
        .use_proto_field_name(for_files)
}

fn failed(format: &str, full_name: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Local(format!("cannot write a {full_name} as {format}: {e}"))
}

/// `msg`, a `full_name` message, as a proto3 JSON value (camelCase names, defaults included).
pub(crate) fn to_json<M: prost::Message>(
    msg: &M,
    full_name: &str,
) -> Result<serde_json::Value, CliError> {
    dynamic(msg, full_name)?
        .serialize_with_options(serde_json::value::Serializer, &options(false))
        .map_err(|e| failed("JSON", full_name, e))
}

/// `msg` as proto3 JSON text with its fields in declaration order: pretty, or on one line (for
/// JSON lines). With `for_files`, in the style of a file `publish` reads back.
pub(crate) fn to_json_text<M: prost::Message>(
    msg: &M,
    full_name: &str,
    pretty: bool,
    for_files: bool,
) -> Result<String, CliError> {
    let message = dynamic(msg, full_name)?;
    let mut out = Vec::new();
    let written = if pretty {
        let mut serializer = serde_json::Serializer::pretty(&mut out);
        message.serialize_with_options(&mut serializer, &options(for_files))
    } else {
        let mut serializer = serde_json::Serializer::new(&mut out);
        message.serialize_with_options(&mut serializer, &options(for_files))
    };
    written.map_err(|e| failed("JSON", full_name, e))?;
    String::from_utf8(out).map_err(|e| failed("JSON", full_name, e))
}

/// `msg` as a YAML document that [`from_file`] reads back (proto field names in declaration
/// order, defaults omitted).
pub(crate) fn to_yaml<M: prost::Message>(msg: &M, full_name: &str) -> Result<String, CliError> {
    let mut out = Vec::new();
    let mut serializer = serde_norway::Serializer::new(&mut out);
    dynamic(msg, full_name)?
        .serialize_with_options(&mut serializer, &options(true))
        .map_err(|e| failed("YAML", full_name, e))?;
    String::from_utf8(out).map_err(|e| failed("YAML", full_name, e))
}

/// Reads `path` (JSON when it ends in `.json`, YAML otherwise; `-` is standard input) as a
/// JSON value.
pub(crate) fn read_document(path: &Path) -> Result<serde_json::Value, CliError> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::Local(format!("{shown}: {e}")))?;
    if path.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str(&text).map_err(|e| CliError::Local(format!("{shown}: {e}")))
    } else {
        serde_norway::from_str(&text).map_err(|e| CliError::Local(format!("{shown}: {e}")))
    }
}

/// A `full_name` message from a JSON value in the proto3 JSON mapping (proto or JSON field
/// names; unknown fields are refused, so a misspelt key does not pass silently).
pub(crate) fn from_value<M: prost::Message + Default>(
    value: serde_json::Value,
    full_name: &str,
) -> Result<M, CliError> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor(full_name)?, value, &options)
        .map_err(|e| CliError::Local(format!("not a valid {full_name}: {e}")))?;
    M::decode(prost::Message::encode_to_vec(&dynamic).as_slice())
        .map_err(|e| CliError::Local(format!("not a valid {full_name}: {e}")))
}

/// A `full_name` message read from a YAML or JSON file (see [`read_document`]).
pub(crate) fn from_file<M: prost::Message + Default>(
    path: &Path,
    full_name: &str,
) -> Result<M, CliError> {
    from_value(read_document(path)?, full_name).map_err(|e| match e {
        CliError::Local(message) => CliError::Local(format!("{}: {message}", path.display())),
        other => other,
    })
}

/// The prefix every value of a Leadflow enum shares (`LEAD_STAGE_` for `LEAD_STAGE_MQL`).
fn enum_prefix(e: &prost_reflect::EnumDescriptor) -> String {
    e.get_value(0)
        .and_then(|v| v.name().strip_suffix("UNSPECIFIED").map(str::to_owned))
        .unwrap_or_default()
}

/// The short, lower-case name of value `number` of enum `full_name` (`mql`, `sdr-review`), or
/// `-` for unspecified and the number for an unknown value.
pub(crate) fn enum_label(full_name: &str, number: i32) -> String {
    let Some(e) = pool().ok().and_then(|p| p.get_enum_by_name(full_name)) else {
        return number.to_string();
    };
    if number == 0 {
        return "-".to_owned();
    }
    let prefix = enum_prefix(&e);
    e.get_value(number).map_or_else(
        || number.to_string(),
        |v| {
            v.name()
                .strip_prefix(&prefix)
                .unwrap_or(v.name())
                .to_lowercase()
                .replace('_', "-")
        },
    )
}

/// The short names of every specified value of enum `full_name`, for `--help`.
pub(crate) fn enum_labels(full_name: &str) -> Vec<String> {
    pool()
        .ok()
        .and_then(|p| p.get_enum_by_name(full_name))
        .map(|e| {
            e.values()
                .filter(|v| v.number() != 0)
                .map(|v| enum_label(full_name, v.number()))
                .collect()
        })
        .unwrap_or_default()
}

/// The number of the value of enum `full_name` named `label` (short or full name, any case).
pub(crate) fn enum_number(full_name: &str, label: &str) -> Option<i32> {
    let e = pool().ok()?.get_enum_by_name(full_name)?;
    let wanted = label.trim().to_uppercase().replace('-', "_");
    let prefixed = format!("{}{wanted}", enum_prefix(&e));
    e.values()
        .find(|v| v.name() == prefixed || v.name() == wanted)
        .map(|v| v.number())
}
