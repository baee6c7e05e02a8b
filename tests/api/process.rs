//! Brokers as processes: started, signalled, and talked to over HTTP.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct BrokerProcess {
    pub child: Child,
}

impl BrokerProcess {
    pub fn start(vars: &HashMap<String, String>) -> BrokerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_domain-broker"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("broker binary starts");
        BrokerProcess { child }
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits for the process to end.
    pub fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Talks to a broker process over HTTP.
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

impl Client {
    pub fn new(addr: &str, vars: &HashMap<String, String>) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}/v2/service_instances"),
            user: vars["BROKER_USERNAME"].clone(),
            password: vars["BROKER_PASSWORD"].clone(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .header("X-Broker-API-Version", "2.17")
    }

    /// The latest operation, or `None` while the broker does not answer.
    pub async fn last_operation(&self, id: &str) -> Option<Value> {
        let res = self
            .request(reqwest::Method::GET, &format!("{id}/last_operation"))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// Polls (through restarts) until the operation is no longer in
    /// progress, for up to 30 s.
    pub async fn wait_finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = self.last_operation(id).await
                && body["state"] != "in progress"
            {
                return body;
            }
            assert!(Instant::now() < deadline, "the broker did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn wait_until_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
