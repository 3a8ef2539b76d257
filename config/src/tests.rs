use super::*;

#[test]
fn embedded_default_is_valid() {
    let deployment = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("/tmp"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        deployment.control_plane_addr(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let edge = deployment.node("edge-eu").unwrap();
    assert_eq!(edge.listeners()[0].1, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(edge.listeners()[1].1, "127.0.0.1:8443".parse().unwrap());
    assert!(deployment.origin.rule_for("/assets/app.css").is_some());
}

mod properties;
