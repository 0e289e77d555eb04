/// What is wrong with a piece of model data: a name, a field, a key or an encoded value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("key {key:?} is not a calico v1 key")]
    UnknownKey { key: String },
    #[error("cannot decode value of {key}: {reason}")]
    Decode { key: String, reason: String },
}

impl ModelError {
    pub(crate) fn field(field: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        ModelError::InvalidField {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}
