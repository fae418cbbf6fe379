use super::*;
use AttributeValue as V;

fn item(pairs: &[(&str, V)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn uuidv5_of_name_is_the_new_key() {
    let t = Declarative::parse(
        "key:\n  - attribute: UUID\n    uuidv5: { from: [Name] }\n",
        &keys(&["Name"]),
    )
    .unwrap();
    let out = t
        .item(&item(&[
            ("Name", V::S("alice".into())),
            ("Age", V::N("3".into())),
        ]))
        .unwrap();
    let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"alice").to_string();
    assert_eq!(out["UUID"], V::S(expected.clone()));
    assert_eq!(out["Name"], V::S("alice".into()));
    assert_eq!(t.target_key_names(), vec!["UUID".to_string()]);
    // A REMOVE finds its key from the source keys alone.
    let k = t
        .change_key(&item(&[("Name", V::S("alice".into()))]), None)
        .unwrap();
    assert_eq!(k, item(&[("UUID", V::S(expected))]));
    // The README's example, as Python's uuid.uuid5(uuid.NAMESPACE_OID, "Alice") gives it.
    let alice = t.item(&item(&[("Name", V::S("Alice".into()))])).unwrap();
    assert_eq!(
        alice["UUID"],
        V::S("05d47de8-5888-5659-8bf1-da7e6a00d35c".into())
    );
}

#[test]
fn rename_copy_drop_set_and_concat() {
    let t = Declarative::parse(
        r#"{"key":[{"attribute":"id","concat":{"from":["pk","sk"],"separator":"|"}}],
            "rename":{"a":"b"},"copy":{"c":"d"},"drop":["e"],"set":{"v":{"N":"2"}}}"#,
        &keys(&["pk", "sk"]),
    )
    .unwrap();
    let out = t
        .item(&item(&[
            ("pk", V::S("x".into())),
            ("sk", V::N("1.5".into())),
            ("a", V::Bool(true)),
            ("c", V::S("c".into())),
            ("e", V::Null(true)),
        ]))
        .unwrap();
    assert_eq!(out["id"], V::S("x|1.5".into()));
    assert_eq!(out["b"], V::Bool(true));
    assert!(!out.contains_key("a") && !out.contains_key("e"));
    assert_eq!(out["c"], out["d"]);
    assert_eq!(out["v"], V::N("2".into()));
}

#[test]
fn removes_need_old_images_for_non_key_sources() {
    let t = Declarative::parse(
        "key:\n  - attribute: email_id\n    uuidv5: { from: [Email] }\n",
        &keys(&["pk"]),
    )
    .unwrap();
    let ks = item(&[("pk", V::S("1".into()))]);
    assert!(matches!(
        t.change_key(&ks, None),
        Err(TransformError::NoOldImage(_))
    ));
    let old = item(&[("pk", V::S("1".into())), ("Email", V::S("a@b".into()))]);
    assert!(t.change_key(&ks, Some(&old)).is_ok());
    assert!(remove_mapping_supported(&t, &keys(&["pk"]), Some("NEW_IMAGE")).is_err());
    assert!(remove_mapping_supported(&t, &keys(&["pk"]), Some("NEW_AND_OLD_IMAGES")).is_ok());
}

#[test]
fn bad_specs_and_bad_items_are_clear_errors() {
    assert!(matches!(
        Declarative::parse("key: [{attribute: x}]", &keys(&["pk"])),
        Err(SpecError::Invalid(_))
    ));
    assert!(matches!(
        Declarative::parse("nonsense: 1", &keys(&["pk"])),
        Err(SpecError::Parse(_))
    ));
    assert!(matches!(
        Declarative::parse("rename: {pk: id}", &keys(&["pk"])),
        Err(SpecError::Invalid(_))
    ));
    let t = Declarative::parse(
        "key: [{attribute: n, convert: {from: pk, to: N}}]",
        &keys(&["pk"]),
    )
    .unwrap();
    assert!(matches!(
        t.item(&item(&[("pk", V::S("abc".into()))])),
        Err(TransformError::NotNumber { .. })
    ));
    assert_eq!(
        t.item(&item(&[("pk", V::S("42".into()))])).unwrap()["n"],
        V::N("42".into())
    );
    // f64 accepts these; DynamoDB does not. The error names the attribute.
    for bad in [
        "NaN",
        "inf",
        "1e400",
        "-Infinity",
        "1234567890123456789012345678901234567890",
    ] {
        let err = t.item(&item(&[("pk", V::S(bad.into()))])).unwrap_err();
        assert!(
            matches!(&err, TransformError::NotNumber { attr, .. } if attr == "pk"),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("attribute pk"), "{err}");
    }
}

#[test]
fn the_source_key_is_found_in_a_target_item_through_renames() {
    let t = Declarative::parse(
        "key: [{attribute: UUID, uuidv5: {from: [Name]}}]\nrename: {Name: DisplayName}",
        &keys(&["Name"]),
    )
    .unwrap();
    let target = t.item(&item(&[("Name", V::S("ann".into()))])).unwrap();
    assert_eq!(
        t.source_key_of(&target, &keys(&["Name"])),
        Some(item(&[("Name", V::S("ann".into()))]))
    );
    let dropped = Declarative::parse(
        "key: [{attribute: UUID, uuidv5: {from: [Name]}}]\ndrop: [Name]",
        &keys(&["Name"]),
    )
    .unwrap();
    let target = dropped
        .item(&item(&[("Name", V::S("ann".into()))]))
        .unwrap();
    assert_eq!(dropped.source_key_of(&target, &keys(&["Name"])), None);
    let names: BTreeSet<String> = ["Email".to_string()].into();
    assert_eq!(
        project(
            &item(&[("pk", V::S("1".into())), ("Email", V::S("a@b".into()))]),
            &names
        ),
        Some(item(&[("Email", V::S("a@b".into()))]))
    );
    assert_eq!(project(&item(&[("pk", V::S("1".into()))]), &names), None);
}

#[test]
fn identity_keeps_everything() {
    let t = Identity {
        key_names: keys(&["pk"]),
    };
    let i = item(&[("pk", V::S("1".into())), ("x", V::Bool(true))]);
    assert_eq!(t.item(&i).unwrap(), i);
    assert_eq!(t.key(&i).unwrap(), item(&[("pk", V::S("1".into()))]));
    assert!(t.is_identity_key());
}

#[test]
fn a_key_from_non_key_attributes_needs_the_source_key_in_the_target() {
    let keys = vec!["pk".to_string()];
    let parse = |s: &str| Declarative::parse(s, &keys).unwrap();
    let by_email = parse("key: [{attribute: id, uuidv5: {from: [email]}}]");
    assert!(by_email.reuses_keys(&mut keys.iter()));
    assert!(!parse("key: [{attribute: id, concat: {from: [pk]}}]").reuses_keys(&mut keys.iter()));
    assert!(!parse("rename: {v: value}").reuses_keys(&mut keys.iter()));
    let sk: Attrs = [("pk".to_string(), AttributeValue::S("a".into()))].into();
    // Renamed: found under its new name; dropped, or overwritten: no owner.
    let renamed = parse("key: [{attribute: id, uuidv5: {from: [email]}}]\nrename: {pk: source_pk}");
    assert_eq!(
        renamed.owner_attrs(&sk),
        Some([("source_pk".to_string(), AttributeValue::S("a".into()))].into())
    );
    let dropped = parse("key: [{attribute: id, uuidv5: {from: [email]}}]\ndrop: [pk]");
    assert_eq!(dropped.owner_attrs(&sk), None);
    // Overwritten by the derived key, but copied first: found in the copy.
    let copied = parse("key: [{attribute: pk, uuidv5: {from: [email]}}]\ncopy: {pk: source_pk}");
    let at_copy: Attrs = [("source_pk".to_string(), AttributeValue::S("a".into()))].into();
    assert_eq!(copied.owner_attrs(&sk), Some(at_copy.clone()));
    assert_eq!(copied.source_key_of(&at_copy, &keys), Some(sk.clone()));
    assert_eq!(
        parse("key: [{attribute: pk, uuidv5: {from: [email]}}]").owner_attrs(&sk),
        None
    );
    let view = Some("NEW_AND_OLD_IMAGES");
    assert!(remove_mapping_supported(&by_email, &keys, view).is_ok());
    let why = remove_mapping_supported(&dropped, &keys, view).unwrap_err();
    assert!(why.contains("source key"), "{why}");
}

#[test]
fn without_a_key_rule_the_source_key_must_reach_the_target_unchanged() {
    let keys = vec!["Id".to_string()];
    for spec in [
        "copy: {Email: Id}",
        "rename: {Email: Id}",
        "set: {Id: {S: x}}",
        "rename: {Id: Key}",
        "drop: [Id]",
    ] {
        let err = Declarative::parse(spec, &keys).unwrap_err().to_string();
        assert!(err.contains("source key Id"), "{spec}: {err}");
    }
    assert!(Declarative::parse("copy: {Id: LegacyId}", &keys).is_ok());
    // A key from part of a composite source key is shared by several items.
    let pair = vec!["pk".to_string(), "sk".to_string()];
    let partial =
        Declarative::parse("key: [{attribute: id, uuidv5: {from: [pk]}}]", &pair).unwrap();
    assert!(partial.reuses_keys(&mut pair.iter()));
    let whole =
        Declarative::parse("key: [{attribute: id, concat: {from: [pk, sk]}}]", &pair).unwrap();
    assert!(!whole.reuses_keys(&mut pair.iter()));
}
