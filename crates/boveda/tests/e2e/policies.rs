//! Backup policies: the default one, creation with GFS retention, limits and
//! rules named by field, deletion.

use crate::common;

use common::Env;

fn policies(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&env.ok(&["--output", "json", "policy", "list"]))
        .expect("json")
        .as_array()
        .expect("list")
        .clone()
}

#[test]
fn policies_are_created_validated_listed_and_deleted() {
    let env = Env::new();
    env.create_vault();
    let all = policies(&env);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "DefaultPolicy");
    assert_eq!(all[0]["retention"]["daily_days"], 30);
    assert_eq!(all[0]["schedule"]["frequency"], "daily");

    env.ok(&[
        "policy",
        "create",
        "gfs",
        "--schedule",
        "weekly",
        "--day",
        "sun",
        "--day",
        "wed",
        "--time",
        "01:30",
        "--time-zone",
        "Europe/Madrid",
        "--weekly-keep",
        "12",
        "--weekly-on",
        "sun",
        "--monthly-keep",
        "24",
        "--monthly-on",
        "first-sun",
        "--yearly-keep",
        "10",
        "--yearly-month",
        "12",
        "--yearly-on",
        "last",
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "policy", "show", "GFS"])).expect("json");
    assert_eq!(shown["schedule"]["days"], serde_json::json!(["sunday", "wednesday"]));
    assert_eq!(shown["schedule"]["time_zone"], "Europe/Madrid");
    assert_eq!(shown["retention"]["weekly"]["weeks"], 12);
    assert_eq!(shown["retention"]["monthly"]["on"], "first-sun");
    assert_eq!(shown["retention"]["yearly"]["month"], 12);

    let cases: [(&[&str], &str); 7] = [
        (&["--time", "02:00", "--daily-keep", "10000"], "--daily-keep: must be 1 to 9999"),
        (
            &["--schedule", "weekly", "--day", "mon", "--time", "02:00", "--daily-keep", "7"],
            "--daily-keep: a weekly schedule",
        ),
        (&["--daily-keep", "7"], "--time: a schedule needs at least one time"),
        (
            &["--time", "02:00", "--daily-keep", "7", "--weekly-on", "sun"],
            "--weekly-on: a weekly day needs how many weeks",
        ),
        (&["--time", "02:00", "--monthly-keep", "1189", "--monthly-on", "1"], "--monthly-keep: must be 1 to 1188"),
        (&["--time", "02:00", "--yearly-keep", "5", "--yearly-month", "13", "--yearly-on", "1"], "--yearly-month"),
        (&["--time", "02:00"], "keep points by at least one rule"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["policy", "create", "bad"];
        all.extend_from_slice(args);
        let err = env.fails(&all);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = env.fails(&["policy", "create", "gfs", "--time", "02:00", "--daily-keep", "7"]);
    assert!(err.contains("already exists"), "{err}");

    env.ok(&["policy", "delete", "gfs"]);
    assert_eq!(policies(&env).len(), 1);
    let err = env.fails(&["policy", "show", "gfs"]);
    assert!(err.contains("no policy named"), "{err}");
}
