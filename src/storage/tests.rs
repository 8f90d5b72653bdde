//! The behaviour every engine shares, run against each engine: a new engine joins
//! [`engines`] and passes the same suite.

use super::*;
use crate::error::Error;

/// One fresh instance of every engine.
fn engines() -> Vec<Box<dyn Engine>> {
    let log = Log::open(std::sync::Arc::new(SimDisk::new()), LogOptions::default()).unwrap();
    vec![Box::new(Memory::new()), Box::new(log)]
}

fn text(s: &str, version: Version) -> Versioned {
    Versioned {
        value: Value::Text(s.into()),
        version,
    }
}

fn list(items: &[&str], version: Version) -> Versioned {
    Versioned {
        value: Value::List(items.iter().map(|i| i.to_string()).collect()),
        version,
    }
}

#[test]
fn a_copy_is_stored_only_over_an_older_version() {
    for mut engine in engines() {
        assert!(engine.put_if_newer("k".into(), text("a", 5)).unwrap());
        assert!(!engine.put_if_newer("k".into(), text("older", 4)).unwrap());
        assert!(!engine.put_if_newer("k".into(), text("same", 5)).unwrap());
        assert_eq!(engine.get("k"), Some(text("a", 5)));
        assert_eq!(engine.version("k"), 5);
        assert_eq!(engine.version("absent"), 0);
    }
}

#[test]
fn append_extends_a_list_and_creates_a_missing_one() {
    for mut engine in engines() {
        engine.append("l".into(), "x".into(), 3).unwrap();
        engine.append("l".into(), "y".into(), 7).unwrap();
        assert_eq!(engine.get("l"), Some(list(&["x", "y"], 7)));
    }
}

#[test]
fn append_to_a_text_is_refused_and_changes_nothing() {
    for mut engine in engines() {
        engine.put_if_newer("t".into(), text("v", 2)).unwrap();
        match engine.append("t".into(), "x".into(), 3) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains("text"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(engine.get("t"), Some(text("v", 2)));
    }
}

#[test]
fn remove_forgets_the_key_and_returns_what_it_held() {
    for mut engine in engines() {
        engine.put_if_newer("k".into(), text("v", 1)).unwrap();
        assert_eq!(engine.remove("k").unwrap(), Some(text("v", 1)));
        assert_eq!(engine.remove("k").unwrap(), None);
        assert_eq!((engine.get("k"), engine.len()), (None, 0));
    }
}

#[test]
fn scan_lists_texts_and_lists_in_key_order_after_a_bound() {
    for mut engine in engines() {
        for key in ["d", "b"] {
            engine.put_if_newer(key.into(), list(&["i"], 1)).unwrap();
        }
        for key in ["c", "a", "e"] {
            engine.put_if_newer(key.into(), text(key, 1)).unwrap();
        }
        assert_eq!(
            engine.scan(None).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(engine.scan(Some("b")).collect::<Vec<_>>(), ["c", "d", "e"]);
        assert_eq!(
            keys_page(&*engine, Some("a"), 2),
            (vec!["b".to_string(), "c".to_string()], true)
        );
    }
}

#[test]
fn a_batch_stores_only_the_newer_copies_and_counts_them() {
    for mut engine in engines() {
        engine.put_if_newer("a".into(), text("new", 9)).unwrap();
        let batch = vec![
            ("a".to_string(), text("old", 3)),
            ("b".to_string(), text("b", 1)),
            ("c".to_string(), list(&["x"], 2)),
        ];
        assert_eq!(engine.apply_batch(batch).unwrap(), 2);
        assert_eq!(engine.get("a"), Some(text("new", 9)));
        assert_eq!(engine.len(), 3);
    }
}

#[test]
fn a_local_set_takes_the_next_version() {
    for mut engine in engines() {
        assert_eq!(
            set_local(&mut *engine, "k".into(), Value::Text("a".into())).unwrap(),
            1
        );
        engine.put_if_newer("k".into(), text("b", 10)).unwrap();
        assert_eq!(
            set_local(&mut *engine, "k".into(), Value::Text("c".into())).unwrap(),
            11
        );
    }
}

#[test]
fn a_local_set_on_a_key_at_the_top_version_is_refused_not_wrapped() {
    for mut engine in engines() {
        engine
            .put_if_newer("k".into(), text("top", crate::types::VERSION_MAX))
            .unwrap();
        assert!(set_local(&mut *engine, "k".into(), Value::Text("c".into())).is_err());
        assert_eq!(
            engine.get("k").map(|v| v.version),
            Some(crate::types::VERSION_MAX)
        );
    }
}
