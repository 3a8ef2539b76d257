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

/// The sandbox's total bounds: each bad value is reported at its own key, all at once.
#[test]
fn sandbox_bounds_are_validated() {
    let text = "[regions.local]\n[latency]\nenabled = false\n\
        [[nodes]]\nname = \"sandbox\"\nrole = \"sandbox\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n\
        [sandbox]\nmax_finished_jobs = 0\nmax_finished_bytes = \"1MiB\"\n\
        max_subscribers_per_job = 9\nmax_subscribers = 4\nsubscriber_send_timeout = \"0s\"\n\
        compile_concurrency = 0\nscratch_files = 0\nmax_test_cases = 0\nmax_parallel_cases = 0\n\
        maximums = { wall = \"60s\", cpu = \"60s\", memory = \"1GiB\", output = \"1MiB\" }\n";
    let errors = parse(text, "test.toml", Path::new("/tmp")).unwrap_err();
    let paths: Vec<&str> = errors.diagnostics.iter().map(|d| d.path.as_str()).collect();
    for key in [
        "sandbox.max_finished_jobs",
        "sandbox.max_finished_bytes",
        "sandbox.max_subscribers_per_job",
        "sandbox.subscriber_send_timeout",
        "sandbox.compile_concurrency",
        "sandbox.scratch_files",
        "sandbox.max_test_cases",
        "sandbox.max_parallel_cases",
    ] {
        assert!(paths.contains(&key), "{key} not reported: {errors}");
    }
    let defaults = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("/tmp")).unwrap();
    assert_eq!(defaults.sandbox.max_finished_jobs, 1000);
    assert_eq!(defaults.sandbox.max_finished_bytes, 256 << 20);
    assert!(defaults.sandbox.max_finished_bytes >= 2 * defaults.sandbox.maximums.output);
}
mod properties;

#[test]
fn callback_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let text = |file: &str| {
        format!(
            "[regions.local]\n[latency]\nenabled = false\n\
             [[nodes]]\nname = \"sandbox\"\nrole = \"sandbox\"\nregion = \"local\"\n\
             listen = \"127.0.0.1:0\"\n[sandbox.callbacks]\nca_file = \"{file}\"\n"
        )
    };
    for file in ["missing.pem", "empty.pem"] {
        let errors = parse(&text(file), "test.toml", dir.path()).unwrap_err();
        let found = errors
            .diagnostics
            .iter()
            .find(|d| d.path == "sandbox.callbacks.ca_file")
            .unwrap_or_else(|| panic!("{file}: {errors}"));
        assert!(found.message.contains(file), "{found:?}");
    }
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let deployment = parse(&text("ca.pem"), "test.toml", dir.path()).unwrap();
    assert_eq!(
        deployment.sandbox.callbacks.ca_file,
        Some(dir.path().join("ca.pem"))
    );
}

/// `[cache] l1_policy`: the simulator's policy names and moka; anything else is an error
/// at the key, with its line, listing the known names.
#[test]
fn the_l1_policy_is_one_of_the_known_names() {
    let text = |policy: &str| {
        format!("[regions.local]\n[latency]\nenabled = false\n[cache]\nl1_policy = \"{policy}\"\n")
    };
    for policy in L1Policy::ALL {
        let deployment = parse(&text(policy.as_str()), "test.toml", Path::new("/tmp"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(deployment.cache.l1_policy, policy);
    }
    let errors = parse(&text("arc"), "test.toml", Path::new("/tmp")).unwrap_err();
    let problem = errors
        .diagnostics
        .iter()
        .find(|d| d.path == "cache.l1_policy")
        .unwrap_or_else(|| panic!("not reported at cache.l1_policy: {errors}"));
    assert!(
        problem.message.contains("\"arc\"") && problem.message.contains("s3fifo"),
        "{errors}"
    );
    assert!(errors.to_string().contains("test.toml:5"), "{errors}");
    let defaults = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("/tmp")).unwrap();
    assert_eq!(defaults.cache.l1_policy, L1Policy::Moka);
}

/// Nodes on separate machines are named by host name, resolved when the file is loaded;
/// one that does not resolve is an error naming the node and the host.
#[test]
fn nodes_named_by_host_name_are_resolved_or_refused_by_name() {
    let text = |host: &str| {
        format!(
            "[regions.local]\n[latency]\nenabled = false\n\
             [[nodes]]\nname = \"origin-a\"\nrole = \"origin\"\nregion = \"local\"\nlisten = \"{host}:8080\"\n"
        )
    };
    let deployment = parse(&text("localhost"), "hosts.toml", Path::new("/tmp"))
        .unwrap_or_else(|err| panic!("{err}"));
    let origin = deployment.node("origin-a").unwrap();
    assert!(
        origin.listeners()[0].1.ip().is_loopback(),
        "{:?}",
        origin.listeners()
    );
    assert_eq!(origin.listeners()[0].1.port(), 8080);

    // `.invalid` never resolves (RFC 6761).
    let errors = parse(
        &text("origin-a.edgebox.invalid"),
        "hosts.toml",
        Path::new("/tmp"),
    )
    .unwrap_err();
    let error = errors
        .diagnostics
        .iter()
        .find(|d| d.path == "nodes[0].listen")
        .unwrap_or_else(|| panic!("{errors}"));
    assert!(
        error.message.contains("node \"origin-a\"")
            && error
                .message
                .contains("host \"origin-a.edgebox.invalid\" does not resolve"),
        "{errors}"
    );
    // Not a host name at all: the usual syntax error, no lookup.
    let errors = parse(&text("bad host!"), "hosts.toml", Path::new("/tmp")).unwrap_err();
    assert!(
        errors.to_string().contains("not a listen address"),
        "{errors}"
    );
}
