//! Alertmanager's webhook notification, version 4
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>), and
//! which of its alerts ask for a retrain. Pure: bytes in, data out.
//!
//! Parsing is strict about what the receiver uses (`version`, `status`, `alerts`,
//! each alert's `status` and `labels`) and lenient about the rest, so fields a later
//! Alertmanager adds are no reason to refuse a notification.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TriggerAlert;

/// The webhook payload version this receiver reads.
pub const VERSION: &str = "4";

/// One webhook call: a group of alerts that Alertmanager notifies together.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    /// Identifies the group (route and group labels) across notifications.
    #[serde(default)]
    pub group_key: String,
    /// Alerts left out because of the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` if any alert in the group fires, else `resolved`.
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; kept as text (nothing here computes with it).
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// The `alertname` label.
    pub fn name(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Why a body is not a notification this receiver reads (400). The message names
/// the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object; expected an Alertmanager webhook notification")]
    NotAnObject,
    #[error("version is missing; expected an Alertmanager webhook notification (version \"4\")")]
    NoVersion,
    #[error(
        "version {0} is not supported; this receiver reads Alertmanager's webhook version \"4\""
    )]
    Version(String),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

/// Parses a webhook body. Each alert is read on its own, so an error names it
/// (`alerts[2]: missing field `status``).
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(PayloadError::NotAnObject);
    };
    match object.get("version") {
        None => return Err(PayloadError::NoVersion),
        Some(Value::String(v)) if v == VERSION => {}
        Some(other) => return Err(PayloadError::Version(other.to_string())),
    }
    let field = |field: &str, problem: String| PayloadError::Field {
        field: field.to_string(),
        problem,
    };
    let alerts = match object.insert("alerts".into(), Value::Array(Vec::new())) {
        Some(Value::Array(alerts)) => alerts,
        Some(_) => return Err(field("alerts", "is not an array".into())),
        None => return Err(field("alerts", "is missing".into())),
    };
    // Read on its own too, so that a wrong status is named as such.
    let status: AlertStatus = match object.get("status") {
        Some(status) => {
            serde_json::from_value(status.clone()).map_err(|e| field("status", e.to_string()))?
        }
        None => return Err(field("status", "is missing".into())),
    };
    let mut notification: Notification = serde_json::from_value(Value::Object(object))
        .map_err(|e| field("notification", e.to_string()))?;
    notification.status = status;
    notification.alerts = alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| {
            serde_json::from_value(alert).map_err(|e| field(&format!("alerts[{i}]"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(notification)
}

/// An alert the receiver answered without acting on it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// The `alertname`, or empty when the alert has none.
    pub alert: String,
    pub fingerprint: String,
    pub reason: IgnoreReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreReason {
    /// The alert has stopped firing: nothing to retrain for.
    Resolved,
    /// Its name is not in `retrain.alerts`.
    NotHandled,
    /// It has no `alertname` label.
    NoAlertName,
    /// Its `model_version` label names a version that is no longer the champion:
    /// a promotion has already answered it (Alertmanager repeats a firing alert
    /// until Prometheus sees it resolve).
    Superseded,
    /// A challenger races the champion in shadow (or guards a new champion): its
    /// verdict answers the alert, and a job now would replace it mid-race.
    Racing,
    /// A guard rolled back the version a job for this very alert (the same
    /// fingerprint, firing since the same `startsAt`) produced: retraining on it
    /// again would fit the same challenger. It counts again once it resolves and
    /// fires anew.
    RolledBack,
    /// An alert about a swap (`SWAP_ALERTS`) while no new champion is guarded: there
    /// is no champion it replaced in shadow to go back to (`triage models rollback`
    /// still can).
    NoGuard,
}

/// Alerts about a model swap that the guard rolls back on (no retrain): model-caused
/// dead letters right after a new champion started serving.
pub const SWAP_ALERTS: &[&str] = &["TriageSwapDeadLetters"];

/// What the registry says now, as [`sort_alerts`] needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The champion's version (None: unknown, every alert is about it).
    pub champion: Option<String>,
    /// The version in shadow, when one is.
    pub challenger: Option<String>,
    /// Alerts a guard's rollback answered: (fingerprint, starts_at).
    pub answered: BTreeSet<(String, String)>,
}

/// A notification's alerts, sorted into those that ask for a retrain and the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sorted {
    pub wanted: Vec<TriggerAlert>,
    /// Alerts about a swap while one is guarded: the guard rolls back on them.
    pub alarms: Vec<TriggerAlert>,
    pub ignored: Vec<Ignored>,
}

/// Keeps the firing alerts whose name is in `handled` and that are about the
/// champion (when the alert names a `model_version` and a champion is known),
/// while no challenger races it and no rollback answered them; every other alert
/// is ignored with its reason.
pub fn sort_alerts(notification: Notification, handled: &[String], standing: &Standing) -> Sorted {
    let mut sorted = Sorted::default();
    for alert in notification.alerts {
        let name = alert.name().unwrap_or_default().to_string();
        let swap = SWAP_ALERTS.contains(&name.as_str());
        let reason = if name.is_empty() {
            Some(IgnoreReason::NoAlertName)
        } else if alert.status == AlertStatus::Resolved {
            Some(IgnoreReason::Resolved)
        } else if swap && standing.challenger.is_none() {
            Some(IgnoreReason::NoGuard)
        } else if swap {
            None
        } else if !handled.contains(&name) {
            Some(IgnoreReason::NotHandled)
        } else if let (Some(version), Some(champion)) =
            (alert.labels.get("model_version"), &standing.champion)
            && version != champion
        {
            Some(IgnoreReason::Superseded)
        } else if standing.challenger.is_some() {
            Some(IgnoreReason::Racing)
        } else if !alert.fingerprint.is_empty()
            && standing
                .answered
                .contains(&(alert.fingerprint.clone(), alert.starts_at.clone()))
        {
            Some(IgnoreReason::RolledBack)
        } else {
            None
        };
        match reason {
            Some(reason) => sorted.ignored.push(Ignored {
                alert: name,
                fingerprint: alert.fingerprint,
                reason,
            }),
            None => {
                let wanted = TriggerAlert {
                    name,
                    fingerprint: alert.fingerprint,
                    labels: alert.labels,
                    starts_at: alert.starts_at,
                };
                if swap {
                    sorted.alarms.push(wanted);
                } else {
                    sorted.wanted.push(wanted);
                }
            }
        }
    }
    sorted
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sent by Alertmanager 0.25 (Debian's) to a webhook receiver: two
    /// `TriageDriftDetected` alerts grouped by alertname, both firing.
    pub(crate) const FIRING: &str = include_str!("testdata/alertmanager-0.25-firing.json");
    /// The same group a little later: one alert still firing, one resolved.
    pub(crate) const FIRING_AND_RESOLVED: &str =
        include_str!("testdata/alertmanager-0.25-firing-and-resolved.json");

    fn handled() -> Vec<String> {
        crate::config::RetrainSettings::default().alerts
    }

    #[test]
    fn real_alertmanager_notification_parses() {
        let n = parse(FIRING.as_bytes()).unwrap();
        assert_eq!(n.version, "4");
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.receiver, "triage-retrainer");
        assert_eq!(n.group_labels["alertname"], "TriageDriftDetected");
        assert_eq!(n.truncated_alerts, 0);
        assert_eq!(n.external_url, "http://vm:19093");
        assert_eq!(n.alerts.len(), 2);
        let a = &n.alerts[0];
        assert_eq!(a.name(), Some("TriageDriftDetected"));
        assert_eq!(a.labels["detector"], "embedding_mmd");
        assert_eq!(a.fingerprint, "1fab5115a88eb9cb");
        assert_eq!(a.ends_at, "0001-01-01T00:00:00Z");
        assert!(a.generator_url.starts_with("http://127.0.0.1:9090/graph"));
    }

    #[test]
    fn firing_handled_alerts_are_wanted() {
        let sorted = sort_alerts(
            parse(FIRING.as_bytes()).unwrap(),
            &handled(),
            &Standing::default(),
        );
        assert!(sorted.ignored.is_empty(), "{sorted:?}");
        let detectors: Vec<&str> = sorted
            .wanted
            .iter()
            .map(|a| a.labels["detector"].as_str())
            .collect();
        assert_eq!(detectors, vec!["embedding_mmd", "prediction_psi"]);
        assert_eq!(sorted.wanted[0].name, "TriageDriftDetected");
        assert_eq!(sorted.wanted[0].starts_at, "2026-11-29T17:37:28.468071849Z");
    }

    #[test]
    fn resolved_alerts_are_ignored() {
        let sorted = sort_alerts(
            parse(FIRING_AND_RESOLVED.as_bytes()).unwrap(),
            &handled(),
            &Standing::default(),
        );
        assert_eq!(sorted.wanted.len(), 1);
        assert_eq!(sorted.wanted[0].labels["detector"], "embedding_mmd");
        assert_eq!(
            sorted.ignored,
            vec![Ignored {
                alert: "TriageDriftDetected".into(),
                fingerprint: "3ec3bc02054803f5".into(),
                reason: IgnoreReason::Resolved,
            }]
        );
    }

    #[test]
    fn alerts_not_in_the_list_or_without_a_name_are_ignored() {
        let mut n = parse(FIRING.as_bytes()).unwrap();
        n.alerts[0]
            .labels
            .insert("alertname".into(), "TriageDeadLetterRate".into());
        n.alerts[1].labels.remove("alertname");
        let sorted = sort_alerts(n, &handled(), &Standing::default());
        assert!(sorted.wanted.is_empty());
        let reasons: Vec<(&str, IgnoreReason)> = sorted
            .ignored
            .iter()
            .map(|i| (i.alert.as_str(), i.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("TriageDeadLetterRate", IgnoreReason::NotHandled),
                ("", IgnoreReason::NoAlertName)
            ]
        );
    }

    #[test]
    fn not_json_and_not_an_object_are_refused() {
        assert!(matches!(
            parse(b"alertname=TriageDriftDetected"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(parse(b"[1, 2]"), Err(PayloadError::NotAnObject));
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(FIRING).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let no_version = edited(|v| {
            v.as_object_mut().unwrap().remove("version");
        });
        assert_eq!(parse(&no_version), Err(PayloadError::NoVersion));
        let v3 = edited(|v| v["version"] = "3".into());
        let err = parse(&v3).unwrap_err();
        assert!(err.to_string().contains("\"3\" is not supported"), "{err}");

        let no_alerts = edited(|v| {
            v.as_object_mut().unwrap().remove("alerts");
        });
        assert_eq!(
            parse(&no_alerts).unwrap_err().to_string(),
            "alerts: is missing"
        );
        let alerts_object = edited(|v| v["alerts"] = serde_json::json!({}));
        assert_eq!(
            parse(&alerts_object).unwrap_err().to_string(),
            "alerts: is not an array"
        );

        let no_status = edited(|v| {
            v["alerts"][1].as_object_mut().unwrap().remove("status");
        });
        let err = parse(&no_status).unwrap_err().to_string();
        assert!(
            err.starts_with("alerts[1]: missing field `status`"),
            "{err}"
        );
        let pending = edited(|v| v["alerts"][0]["status"] = "pending".into());
        let err = parse(&pending).unwrap_err().to_string();
        assert!(
            err.starts_with("alerts[0]: unknown variant `pending`"),
            "{err}"
        );
        let top_status = edited(|v| v["status"] = 1.into());
        let err = parse(&top_status).unwrap_err().to_string();
        assert!(err.starts_with("status: invalid type"), "{err}");
        let labels_list = edited(|v| v["groupLabels"] = serde_json::json!([]));
        let err = parse(&labels_list).unwrap_err().to_string();
        assert!(err.starts_with("notification: invalid type"), "{err}");
    }

    #[test]
    fn unknown_fields_from_a_later_alertmanager_are_accepted() {
        let body = edited(|v| {
            v["newField"] = "x".into();
            v["alerts"][0]["silencedBy"] = serde_json::json!([]);
        });
        assert_eq!(parse(&body).unwrap().alerts.len(), 2);
    }

    #[test]
    fn alerts_about_a_replaced_champion_are_superseded() {
        let n = parse(FIRING.as_bytes()).unwrap();
        let version = n.alerts[0].labels["model_version"].clone();
        let about = |champion: &str| Standing {
            champion: Some(champion.into()),
            ..Standing::default()
        };
        let sorted = sort_alerts(n.clone(), &handled(), &about(&version));
        assert!(!sorted.wanted.is_empty(), "about the champion: wanted");
        let sorted = sort_alerts(n, &handled(), &about("v-newer"));
        assert!(sorted.wanted.is_empty());
        assert!(
            sorted
                .ignored
                .iter()
                .all(|i| i.reason == IgnoreReason::Superseded)
        );
    }

    #[test]
    fn a_race_or_a_rollback_answers_the_alert() {
        let n = parse(FIRING.as_bytes()).unwrap();
        let version = n.alerts[0].labels["model_version"].clone();
        let racing = Standing {
            champion: Some(version.clone()),
            challenger: Some("v-next".into()),
            ..Standing::default()
        };
        let sorted = sort_alerts(n.clone(), &handled(), &racing);
        assert!(sorted.wanted.is_empty());
        assert!(
            sorted
                .ignored
                .iter()
                .all(|i| i.reason == IgnoreReason::Racing)
        );

        // The first alert's firing was answered by a rollback; the second was not.
        let first = &n.alerts[0];
        let answered = Standing {
            champion: Some(version),
            answered: BTreeSet::from([(first.fingerprint.clone(), first.starts_at.clone())]),
            ..Standing::default()
        };
        let sorted = sort_alerts(n.clone(), &handled(), &answered);
        assert_eq!(sorted.ignored.len(), 1);
        assert_eq!(sorted.ignored[0].reason, IgnoreReason::RolledBack);
        assert_eq!(sorted.ignored[0].fingerprint, first.fingerprint);
        assert_eq!(sorted.wanted.len(), 1);
        // The same alert firing anew (another startsAt) counts again.
        let mut anew = n;
        anew.alerts[0].starts_at = "2026-12-06T18:00:00Z".into();
        assert_eq!(sort_alerts(anew, &handled(), &answered).wanted.len(), 2);
    }

    #[test]
    fn a_swap_alert_is_an_alarm_while_a_guard_runs_and_ignored_otherwise() {
        let mut n = parse(FIRING.as_bytes()).unwrap();
        n.alerts.truncate(1);
        n.alerts[0]
            .labels
            .insert("alertname".into(), SWAP_ALERTS[0].into());
        let sorted = sort_alerts(n.clone(), &handled(), &Standing::default());
        assert!(sorted.wanted.is_empty() && sorted.alarms.is_empty());
        assert_eq!(sorted.ignored[0].reason, IgnoreReason::NoGuard);
        let guarded = Standing {
            champion: Some("v3".into()),
            challenger: Some("v2".into()),
            ..Standing::default()
        };
        let sorted = sort_alerts(n, &handled(), &guarded);
        assert!(sorted.wanted.is_empty() && sorted.ignored.is_empty());
        assert_eq!(sorted.alarms[0].name, SWAP_ALERTS[0]);
    }
}
