//! The connection to PostgreSQL verifies the server's certificate.

use super::*;

/// `sslmode=require` verifies the server certificate: the local server's self-signed
/// certificate (CN=localhost) is refused, and trusted once given as `tls_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let ca = PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    let c = connect(PG).await.unwrap();
    let ssl: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert: String = c.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    if ssl != "on" || Path::new(&cert) != ca {
        println!(
            "skipped: the local PostgreSQL does not serve {}",
            ca.display()
        );
        return;
    }
    let url = "postgres://postgres@localhost:5432/test?sslmode=require";
    let schema = Schema::new();
    let spool = TempDir::new();
    let untrusted = Auditor::start(pg_config(url, &schema, spool.path()))
        .await
        .unwrap();
    assert!(!untrusted.metrics().postgres_up, "an unknown CA is refused");
    untrusted.shutdown().await;

    let mut cfg = pg_config(url, &schema, spool.path());
    cfg.tls_ca_file = Some(ca);
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.metrics().postgres_up);
    auditor.record(sample(1));
    rows_become(PG, &schema.name, 1, Duration::from_secs(30)).await;
    let on_tls: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE s.ssl AND a.application_name = 'mcp-gateway-audit'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(on_tls >= 1, "the writer's connection is encrypted");
    auditor.shutdown().await;
}
