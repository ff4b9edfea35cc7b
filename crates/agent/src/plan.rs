//! The agent's planning core: what to do for one pod, from its intent, what
//! runs and what reality says. Pure, so every case is a unit test.

use drover_manifest::{ManifestSha, Reality};

/// The one step a reconcile of a pod takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Everything agrees.
    Nothing,
    /// Intended, not running: install and start, then write reality.
    Launch,
    /// Running another manifest than intended: stop it, start the intended
    /// one, write reality.
    Replace,
    /// Running, no longer intended: stop, uninstall, delete reality and
    /// health.
    Stop,
    /// Neither intended nor running, but a reality record (or health) is
    /// left from an earlier run: delete them.
    Forget,
    /// Running as intended, but the stored reality differs from what the
    /// launchables add up to: write it.
    Report,
}

/// Decides the step. `intent`: the manifest the consistent intent cache
/// holds (absent only after a listing or a delete event said so, never
/// after a failed read); `running`: what this agent runs; `reported`: the
/// reality record just re-read from the store; `current`: the reality the
/// running launchables add up to.
pub fn plan(
    intent: Option<ManifestSha>,
    running: Option<ManifestSha>,
    reported: Option<&Reality>,
    current: Option<&Reality>,
) -> Step {
    match (intent, running) {
        (None, None) if reported.is_some() => Step::Forget,
        (None, None) => Step::Nothing,
        (None, Some(_)) => Step::Stop,
        (Some(_), None) => Step::Launch,
        (Some(want), Some(have)) if want != have => Step::Replace,
        (Some(_), Some(_)) if reported != current => Step::Report,
        (Some(_), Some(_)) => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use drover_manifest::{LaunchStatus, Manifest};

    use super::*;

    fn sha(arg: &str) -> ManifestSha {
        Manifest::builder("web")
            .process("web", ["/bin/web", arg])
            .build()
            .unwrap()
            .sha()
    }

    #[test]
    fn every_combination_of_intent_and_running() {
        let (a, b) = (sha("a"), sha("b"));
        let launched = Reality::new(a, LaunchStatus::Launched);
        let looping = Reality::new(a, LaunchStatus::CrashLooping);
        assert_eq!(plan(None, None, None, None), Step::Nothing);
        assert_eq!(plan(None, None, Some(&launched), None), Step::Forget);
        assert_eq!(
            plan(None, Some(a), Some(&launched), Some(&launched)),
            Step::Stop
        );
        assert_eq!(plan(Some(a), None, None, None), Step::Launch);
        assert_eq!(
            plan(Some(a), None, Some(&launched), None),
            Step::Launch,
            "a record from an earlier run does not mean it runs now"
        );
        assert_eq!(
            plan(Some(b), Some(a), Some(&launched), Some(&launched)),
            Step::Replace
        );
        assert_eq!(
            plan(Some(a), Some(a), Some(&launched), Some(&launched)),
            Step::Nothing
        );
        assert_eq!(
            plan(Some(a), Some(a), Some(&launched), Some(&looping)),
            Step::Report
        );
        assert_eq!(
            plan(Some(a), Some(a), None, Some(&launched)),
            Step::Report,
            "someone deleted the record: write it again"
        );
    }
}
