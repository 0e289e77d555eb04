//! Values that once got through or were silently reinterpreted: `rule add --at` outside the
//! list, and hostnames that are not names. Each fails with one line naming the value, and
//! nothing is written.

mod calicoctl_support;

use calico_cli::ctl::run_with_input;
use calicoctl_support::{dump, store, words, Host};

async fn seeded() -> Host {
    let h1 = Host::new(store(), "host1");
    h1.ok("node --ip=172.31.250.1").await;
    h1.ok("profile add P").await;
    h1.ok("profile P rule add inbound deny icmp").await;
    h1
}

#[tokio::test]
async fn rule_positions_outside_the_list_are_refused() {
    let h1 = seeded().await;
    // Inbound holds two rules (the default allow from tag P, then deny icmp): 1..=3 are valid.
    let before = dump(&h1.ctl.store).await;
    for at in [
        "0",
        "-1",
        "4",
        "99999",
        "-9223372036854775808",
        "9223372036854775807",
    ] {
        let flag = format!("--at={at}");
        let err = h1
            .fails(
                &[
                    "profile", "P", "rule", "add", "inbound", &flag, "allow", "tcp",
                ],
                &format!("\"{at}\""),
            )
            .await
            .to_string();
        assert!(err.contains("from 1 to 3"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert_eq!(
            dump(&h1.ctl.store).await,
            before,
            "--at={at} wrote something"
        );
    }
    // Not a number at all, or beyond i64: refused by the parser, naming the value.
    for at in ["x", "99999999999999999999"] {
        h1.fails(
            &[
                "profile",
                "P",
                "rule",
                "add",
                "inbound",
                &format!("--at={at}"),
                "allow",
            ],
            at,
        )
        .await;
    }
    h1.fails(
        &[
            "profile",
            "P",
            "rule",
            "remove",
            "inbound",
            "--at=-9223372036854775808",
        ],
        "-9223372036854775808",
    )
    .await;
    assert_eq!(dump(&h1.ctl.store).await, before);

    // The ends of the range work: 3 appends, 1 prepends.
    h1.ok("profile P rule add inbound --at=3 allow udp").await;
    h1.ok("profile P rule add inbound --at=1 allow tcp").await;
    assert_eq!(
        h1.ok("profile P rule show").await,
        "Inbound rules:\n   1 allow tcp\n   2 allow from tag P\n   3 deny icmp\n   4 allow udp\nOutbound rules:\n   1 allow\n"
    );
}

#[tokio::test]
async fn hostnames_that_are_not_names_are_refused_by_every_command() {
    let h1 = seeded().await;
    let before = dump(&h1.ctl.store).await;
    for host in ["a/b", "..", ".", "a b", "h\r"] {
        for line in [
            "node --ip=172.31.250.9",
            "profile add Q",
            "endpoint show",
            "status",
            "pool add 192.168.0.0/16",
        ] {
            let mut args = vec![format!("--hostname={host}")];
            args.extend(words(line));
            let err = run_with_input(&h1.ctl, &args, "")
                .await
                .expect_err(&format!("{host:?} accepted by {line}"))
                .to_string();
            assert!(err.contains("hostname"), "{line}: {err}");
        }
    }
    assert_eq!(dump(&h1.ctl.store).await, before);
}
