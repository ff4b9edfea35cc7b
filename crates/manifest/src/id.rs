//! Pod and launchable ids.
//!
//! Both follow the workspace's one id grammar, [`drover_ids`]'s: that of a
//! DNS label (RFC 1123), 1 to 63 characters, lowercase ASCII letters, digits
//! and `-`, starting and ending with a letter or digit. [`PodId`] is
//! `drover_ids::PodId` itself, so manifests, health, keys and controllers
//! share one type.

pub(crate) use drover_ids::truncate;
pub use drover_ids::{IdError, MAX_ID_LEN, PodId};

use crate::ManifestError;
use crate::error::{FieldError, FieldErrorKind};

/// An id that breaks the grammar, as a manifest error at the id's field:
/// `id` for the pod id, `launchables` for a launchable id.
impl From<IdError> for ManifestError {
    fn from(err: IdError) -> Self {
        let path = match err.field {
            "pod" => "id",
            "launchable" => "launchables",
            other => other,
        };
        ManifestError::Invalid(vec![FieldError {
            path: path.into(),
            kind: FieldErrorKind::InvalidId,
            message: err.reason,
            location: None,
        }])
    }
}

drover_ids::id_type!(
    /// The id of one launchable within a pod (a key of `launchables`).
    pub LaunchableId,
    "launchable"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar itself is drover_ids' and tested there case by case
    /// (these cases and more); a launchable id is one of its ids.
    #[test]
    fn launchable_ids_follow_the_one_grammar() {
        for ok in ["a", "web-1", "9lives", &"a".repeat(MAX_ID_LEN)] {
            assert_eq!(LaunchableId::new(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "-web",
            "Web",
            "web_1",
            "a b",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert_eq!(
                LaunchableId::new(bad).unwrap_err().field,
                "launchable",
                "{bad}"
            );
        }
    }

    #[test]
    fn pod_id_from_str_reports_invalid_id() {
        // PodId is drover_ids'; its error converts into the manifest's.
        let err = ManifestError::from("Bad_Id".parse::<PodId>().unwrap_err());
        let [field] = err.field_errors() else {
            panic!("{err}")
        };
        assert_eq!(field.kind, FieldErrorKind::InvalidId);
        assert_eq!(field.path, "id");
        assert_eq!("web".parse::<PodId>().unwrap().as_str(), "web");
    }

    #[test]
    fn launchable_id_errors_name_the_launchables_field() {
        let err = ManifestError::from(LaunchableId::new("web_1").unwrap_err());
        let [field] = err.field_errors() else {
            panic!("{err}")
        };
        assert_eq!(field.kind, FieldErrorKind::InvalidId);
        assert_eq!(field.path, "launchables");
        assert!(field.message.contains("'_'"), "{}", field.message);
    }
}
