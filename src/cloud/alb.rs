//! Certificates on the shared application load balancers' HTTPS listeners.

use aws_sdk_elasticloadbalancingv2::types::Certificate;

use super::{Cloud, CloudError};

/// Where ALIAS records for a load balancer point.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AliasTarget {
    pub dns_name: String,
    pub hosted_zone_id: String,
}

impl Cloud {
    /// Of the configured listeners, the one holding the fewest certificates
    /// (the first of equals, as the original broker chose).
    pub async fn least_used_listener(&self) -> Result<String, CloudError> {
        let mut best: Option<(usize, &String)> = None;
        for arn in &self.config.alb_listener_arns {
            let count = self.listener_certificates(arn).await?.len();
            if best.is_none_or(|(n, _)| count < n) {
                best = Some((count, arn));
            }
        }
        best.map(|(_, arn)| arn.clone())
            .ok_or_else(|| CloudError::unexpected("elbv2", "ALB_LISTENER_ARNS is empty"))
    }

    /// The ARNs of the certificates on a listener, its default included.
    pub async fn listener_certificates(
        &self,
        listener_arn: &str,
    ) -> Result<Vec<String>, CloudError> {
        const OP: &str = "elbv2:DescribeListenerCertificates";
        let mut arns = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elb
                .describe_listener_certificates()
                .listener_arn(listener_arn)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| CloudError::sdk(OP, e))?;
            arns.extend(
                page.certificates()
                    .iter()
                    .filter_map(|c| c.certificate_arn().map(str::to_string)),
            );
            match page.next_marker {
                Some(m) if !m.is_empty() => marker = Some(m),
                _ => return Ok(arns),
            }
        }
    }

    /// Adds a certificate to a listener (a repeat is harmless) and returns
    /// where traffic for it should be pointed.
    pub async fn add_listener_certificate(
        &self,
        listener_arn: &str,
        certificate_arn: &str,
    ) -> Result<AliasTarget, CloudError> {
        self.elb
            .add_listener_certificates()
            .listener_arn(listener_arn)
            .certificates(
                Certificate::builder()
                    .certificate_arn(certificate_arn)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| CloudError::sdk("elbv2:AddListenerCertificates", e))?;
        self.load_balancer_of(listener_arn).await
    }

    async fn load_balancer_of(&self, listener_arn: &str) -> Result<AliasTarget, CloudError> {
        const OP: &str = "elbv2:DescribeLoadBalancers";
        let listeners = self
            .elb
            .describe_listeners()
            .listener_arns(listener_arn)
            .send()
            .await
            .map_err(|e| CloudError::sdk("elbv2:DescribeListeners", e))?;
        let lb_arn = listeners
            .listeners()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .ok_or_else(|| CloudError::unexpected("elbv2:DescribeListeners", "no load balancer"))?;
        let lbs = self
            .elb
            .describe_load_balancers()
            .load_balancer_arns(lb_arn)
            .send()
            .await
            .map_err(|e| CloudError::sdk(OP, e))?;
        let lb = lbs
            .load_balancers()
            .first()
            .ok_or_else(|| CloudError::unexpected(OP, "no load balancer"))?;
        match (lb.dns_name(), lb.canonical_hosted_zone_id()) {
            (Some(dns), Some(zone)) => Ok(AliasTarget {
                dns_name: dns.to_string(),
                hosted_zone_id: zone.to_string(),
            }),
            _ => Err(CloudError::unexpected(OP, "no DNS name or hosted zone")),
        }
    }

    /// Takes a certificate off a listener; one already gone is fine.
    pub async fn remove_listener_certificate(
        &self,
        listener_arn: &str,
        certificate_arn: &str,
    ) -> Result<(), CloudError> {
        let result = self
            .elb
            .remove_listener_certificates()
            .listener_arn(listener_arn)
            .certificates(
                Certificate::builder()
                    .certificate_arn(certificate_arn)
                    .build(),
            )
            .send()
            .await;
        match result.map_err(|e| CloudError::sdk("elbv2:RemoveListenerCertificates", e)) {
            Err(e) if e.is(&["ListenerNotFound", "CertificateNotFound"]) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
