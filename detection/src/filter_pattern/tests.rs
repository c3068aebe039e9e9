//! Semantics table for JSON filter patterns. Unless marked derived, each case is an example or a
//! rule from the CloudWatch Logs user guide, `FilterAndPatternSyntax.md`, section "Matching
//! terms in JSON log events" (subsections named in each test).

use super::*;
use serde_json::{Value as Json, json};

fn m(pattern: &str, record: &Json) -> bool {
    FilterPattern::parse(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .matches(record)
}

/// The guide's first example event ("JSON metric filter examples").
fn guide_event() -> Json {
    json!({
        "eventType": "UpdateTrail",
        "sourceIPAddress": "111.111.111.111",
        "arrayKey": ["value", "another value"],
        "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
        "SomeObject": null,
        "ThisFlag": true
    })
}

/// The guide's compound-conditions event ("JSON compound conditions").
fn compound_event() -> Json {
    json!({
        "user": {"id": 1, "email": "John.Stiles@example.com"},
        "users": [{"id": 2, "email": "John.Doe@example.com"}, {"id": 3, "email": "Jane.Doe@example.com"}],
        "actions": ["GET", "PUT", "DELETE"],
        "coordinates": [[0, 1, 2], [4, 5, 6], [7, 8, 9]]
    })
}

// "JSON metric filter examples": every listed filter matches the example event.
#[test]
fn guide_examples_all_match() {
    let e = guide_event();
    for p in [
        r#"{ $.eventType = "UpdateTrail" }"#,
        "{ $.sourceIPAddress != 123.123.* }",
        r#"{ $.arrayKey[0] = "value" }"#,
        "{ $.objectList[1].id = 2 }",
        "{ $.SomeObject IS NULL }",
        "{ $.SomeOtherObject NOT EXISTS }",
        "{ $.ThisFlag IS TRUE }",
    ] {
        assert!(m(p, &e), "{p}");
    }
}

// Same section: the tests are exact, so their near misses must not match.
#[test]
fn guide_examples_near_misses() {
    let e = guide_event();
    for p in [
        r#"{ $.eventType = "updatetrail" }"#, // case-sensitive
        "{ $.sourceIPAddress != 111.111.* }",
        r#"{ $.arrayKey[1] = "value" }"#,
        r#"{ $.arrayKey[5] = "value" }"#,
        "{ $.objectList[1].id = 1 }",
        "{ $.eventType[0] = UpdateTrail }", // not an array: false
        "{ $.ThisFlag IS NULL }",
        "{ $.SomeOtherObject IS NULL }", // absent is not null
        "{ $.SomeObject NOT EXISTS }",   // null is present
        "{ $.ThisFlag IS FALSE }",
        "{ $.eventType IS TRUE }",
    ] {
        assert!(!m(p, &e), "{p}");
    }
}

// "JSON compound conditions": the four examples and their documented outcomes, which pin
// the precedence () > && > ||.
#[test]
fn guide_compound_examples() {
    let e = compound_event();
    assert!(m(
        r#"{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }"#,
        &e
    ));
    assert!(!m(
        r#"{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }"#,
        &e
    ));
    assert!(m(
        r#"{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch && $.actions[2] = nomatch }"#,
        &e
    ));
    assert!(!m(
        r#"{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch) && $.actions[2] = nomatch }"#,
        &e
    ));
    assert!(m("{ $.coordinates[2][0] = 7 }", &e));
}

// "JSON special considerations": a selector on an array or object matches neither = nor !=.
#[test]
fn containers_match_neither_eq_nor_ne() {
    let e = json!({"users": [1, 2, 3], "obj": {"a": 1}});
    for p in [
        "{$.users = 1}",
        "{$.users != 1}",
        "{$.obj = *}",
        "{$.obj != x}",
        "{$.users = *}",
    ] {
        assert!(!m(p, &e), "{p}");
    }
}

// Derived (the guide is silent): a missing, null or boolean property is not a value node, so
// `!=` does not match it either.
#[test]
fn ne_on_missing_null_or_bool_is_false() {
    let e = json!({"n": null, "b": true});
    for p in [
        "{$.missing != x}",
        "{$.n != x}",
        "{$.b != x}",
        "{$.missing != 1}",
        "{$.missing = *}",
    ] {
        assert!(!m(p, &e), "{p}");
    }
}

// "Matching JSON terms": `*` at, before or after a term; `Ev*ent` only matches `Ev*ent`.
#[test]
fn wildcards_leading_trailing_and_literal_interior() {
    let hit = |v: &str, p: &str| m(&format!("{{ $.s = {p} }}"), &json!({ "s": v }));
    assert!(hit("PutEvent", "*Event"));
    assert!(hit("GetEvent", "\"*Event\""));
    assert!(!hit("EventPut", "*Event"));
    assert!(hit("EventId", "Event*"));
    assert!(hit("EventName", "\"Event*\""));
    assert!(!hit("MyEventName", "Event*"));
    assert!(hit("MyEventName", "*Event*"));
    assert!(!hit("Evxent", "Ev*ent"));
    assert!(hit("Ev*ent", "Ev*ent"));
    assert!(hit("anything", "*"));
    assert!(hit("", "*"));
    // `$.latency = *` (guide, "Publishing numerical values") matches a number too.
    assert!(m("{ $.latency = * }", &json!({"latency": 50})));
}

// "Numeric comparisons": the guide's examples, each against a value on both sides.
#[test]
fn numeric_comparisons() {
    let e = json!({"latency": 500, "numbers": [9999.0, 0.009], "processes": [0, 0, 0, 0, {"averageRuntime": 55.5}],
                   "errorCode": 400});
    for p in [
        "{ $.latency >= 500 }",
        "{ $.numbers[0] < 10e3 }",
        "{ $.numbers[1] < 10e-3 }",
        "{ $.processes[4].averageRuntime <= 55.5 }",
        "{ $.errorCode = 400 }",
        "{ $.errorCode != 500 }",
        "{ $.latency > +499 }",
        "{ $.latency = 500.0 }",
        "{ $.latency < 5e3 }",
    ] {
        assert!(m(p, &e), "{p}");
    }
    for p in [
        "{ $.latency > 500 }",
        "{ $.latency < 500 }",
        "{ $.numbers[0] > 10e3 }",
        "{ $.errorCode != 400 }",
        "{ $.latency > +1000 }",
        "{ $.missing < 1 }",
    ] {
        assert!(!m(p, &e), "{p}");
    }
}

// Derived: numeric literals against strings compare the text (`=`/`!=`) and never order.
#[test]
fn numbers_against_strings() {
    let e = json!({"recipientAccountId": "123456789012", "s": "abc"});
    assert!(m("{ $.recipientAccountId = 123456789012 }", &e));
    assert!(!m("{ $.recipientAccountId != 123456789012 }", &e));
    assert!(!m("{ $.recipientAccountId > 1 }", &e));
    assert!(m("{ $.s != 5 }", &e));
    // A string pattern against a number compares its JSON text.
    assert!(m("{ $.n = 4* }", &json!({"n": 404})));
}

// "Matching JSON terms": selectors allow '-' and '_' in names.
#[test]
fn selector_names_with_dash_and_underscore() {
    let e = json!({"x-amz-acl": "private", "a_b": {"c-d": 1}});
    assert!(m(r#"{ $.x-amz-acl = "private" }"#, &e));
    assert!(m("{ $.a_b.c-d = 1 }", &e));
}

// OR pattern matching ("OR pattern matching" section): {$.foo = bar || $.foo = baz}.
#[test]
fn or_of_unquoted_words() {
    let p = FilterPattern::parse("{$.foo = bar || $.foo = baz }").unwrap();
    assert!(p.matches(&json!({"foo": "bar"})));
    assert!(p.matches(&json!({"foo": "baz"})));
    assert!(!p.matches(&json!({"foo": "qux"})));
}

#[test]
fn parse_errors_name_the_column() {
    let cases = [
        ("$.a = 1", 1, "starts with '{'"),
        ("{ $.a = 1", 10, "closing '}'"),
        ("{ $.a = 1 } x", 13, "after the closing"),
        ("{ a = 1 }", 3, "selector"),
        ("{ $ = 1 }", 4, "at least one property"),
        ("{ $.a[x] = 1 }", 7, "digits"),
        ("{ $.a[0 = 1 }", 8, "']'"),
        ("{ $.a < abc }", 7, "numbers only"),
        ("{ $.a = }", 9, "value"),
        ("{ $.a = \"abc }", 15, "unterminated"),
        ("{ $.a IS NOT NULL }", 10, "IS NOT"),
        ("{ $.a IS MAYBE }", 10, "NULL, TRUE or FALSE"),
        ("{ $.a EXISTS }", 7, "EXISTS"),
        ("{ $.a NOT THERE }", 11, "EXISTS"),
        ("{ ($.a = 1 }", 12, "')'"),
        ("{ $.a = 1 && }", 14, "selector"),
        ("{ $.a = %a(b)% }", 11, "'(' and ')'"),
        ("{ $.a = %a!% }", 11, "not allowed"),
        ("{ $.a = %aé% }", 11, "multi-byte"),
        ("{ $.a = %abc }", 9, "unterminated regex"),
        ("{ $.a = %a% || $.b = %b% || $.c = %c% }", 35, "at most 2"),
        ("{ $.a = %a{2,1}% }", 9, "invalid regex"),
        ("{ $.a > %1% }", 7, "numbers only"),
        ("{ $.a ~ 1 }", 7, "operator"),
        ("{ $[0] = 1 }", 4, "must follow a property"),
    ];
    for (pattern, column, needle) in cases {
        let err = FilterPattern::parse(pattern).expect_err(pattern);
        assert_eq!(err.column, column, "{pattern}: {err}");
        assert!(err.message.contains(needle), "{pattern}: {err}");
    }
}

#[test]
fn parse_builds_the_documented_precedence() {
    let p = FilterPattern::parse("{ $.a = 1 || $.b = 2 && $.c = 3 }").unwrap();
    let Expr::Or(terms) = p.expr() else {
        panic!("{:?}", p.expr())
    };
    assert_eq!(terms.len(), 2);
    assert!(matches!(&terms[1], Expr::And(t) if t.len() == 2));
    assert_eq!(p.source(), "{ $.a = 1 || $.b = 2 && $.c = 3 }");
}

#[test]
fn quoted_strings_keep_escaped_quotes_and_are_never_numbers() {
    assert!(m(r#"{ $.s = "say \"hi\"" }"#, &json!({"s": "say \"hi\""})));
    // "400" quoted is a string: it equals the string, and also the number's text.
    assert!(m(r#"{ $.c = "400" }"#, &json!({"c": "400"})));
    assert!(m(r#"{ $.c = "400" }"#, &json!({"c": 400})));
}

// `||` of exact equalities on one selector is folded into OneOf (resolved once); the fold must
// not change what matches, including parenthesised terms and numbers compared as text.
#[test]
fn or_of_equalities_folds_without_changing_matches() {
    let p = FilterPattern::parse(
        "{($.eventName=CreateTrail) || ($.eventName=\"UpdateTrail\") || ($.eventName=7)}",
    )
    .unwrap();
    assert!(matches!(p.expr(), Expr::Or(_)), "7 is a number, not folded");
    let p = FilterPattern::parse("{($.eventName=CreateTrail) || ($.eventName=\"UpdateTrail\")}")
        .unwrap();
    let Expr::OneOf { values, .. } = p.expr() else {
        panic!("{:?}", p.expr())
    };
    assert_eq!(values, &["CreateTrail", "UpdateTrail"]);
    assert!(p.matches(&json!({"eventName": "UpdateTrail"})));
    assert!(!p.matches(&json!({"eventName": "StopLogging"})));
    assert!(!p.matches(&json!({"eventName": ["UpdateTrail"]})));
    assert!(!p.matches(&json!({})));
    // Mixed selectors, wildcards or != stay an Or.
    for src in [
        "{$.a = x || $.b = x}",
        "{$.a = x* || $.a = y}",
        "{$.a = x || $.a != y}",
    ] {
        assert!(
            matches!(FilterPattern::parse(src).unwrap().expr(), Expr::Or(_)),
            "{src}"
        );
    }
    // A string value equal to a number's text still matches it.
    let p = FilterPattern::parse("{$.n = \"404\" || $.n = \"500\"}").unwrap();
    assert!(matches!(p.expr(), Expr::OneOf { .. }));
    assert!(p.matches(&json!({"n": 404})));
}

// Guide, "Supported regular expressions (regex) syntax" and its JSON examples: `%...%` values
// match anywhere in the string, case-sensitively, with = and !=.
#[test]
fn regex_values() {
    let e = json!({"message": "[ERROR 401] UNAUTHORIZED REQUEST", "code": 404, "ip": "10.10.0.1"});
    assert!(m("{ $.message = %AUTHORIZED% }", &e));
    assert!(m("{ $.message = %^\\[ERROR 40[0-9]\\]% }", &e));
    assert!(!m("{ $.message = %^AUTHORIZED% }", &e));
    assert!(!m("{ $.message = %authorized% }", &e));
    assert!(m("{ $.message != %^OK% }", &e));
    assert!(!m("{ $.message != %AUTH% }", &e));
    assert!(m("{ $.code = %^4[0-9]{2}$% }", &e));
    assert!(m("{ $.ip = %10\\.10\\.0\\.1% }", &e));
    assert!(!m("{ $.missing != %x% }", &e));
    assert!(m("{ $.message = %gray|UNAUTH% && $.code = %4% }", &e));
}
