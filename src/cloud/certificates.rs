//! A certificate where AWS services can use it: an IAM server certificate
//! (the original broker's way) or an ACM import.

use aws_sdk_acm::primitives::Blob;

use super::{Cloud, CloudError, built};
use crate::config::CertificateStore;

/// What AWS calls a stored certificate: the ARN (for listeners and ACM)
/// and, for IAM, the id CloudFront asks for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredCertificate {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_id: Option<String>,
}

pub struct CertificateUpload<'a> {
    /// The IAM name, unique per certificate: `<instance>-<date>-<certificate>`.
    pub name: &'a str,
    /// The IAM path, e.g. `/alb/external-domains/`.
    pub path: &'a str,
    pub leaf_pem: &'a str,
    /// The intermediates.
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    /// Tagged on an ACM import, so that a retry finds it.
    pub certificate_id: &'a str,
    /// The certificate's first domain, which ACM lists it by.
    pub domain: &'a str,
    /// For CloudFront, whose ACM certificates must be in us-east-1.
    pub for_cloudfront: bool,
}

const ACM_TAG: &str = "domain-broker:certificate-id";

impl Cloud {
    /// Uploads, or finds what an earlier attempt uploaded. `retry` says an
    /// earlier attempt may have got as far as AWS.
    pub async fn store_certificate(
        &self,
        upload: &CertificateUpload<'_>,
        retry: bool,
    ) -> Result<StoredCertificate, CloudError> {
        match self.config.certificate_store() {
            CertificateStore::Iam => self.upload_iam(upload).await,
            CertificateStore::Acm => {
                if retry
                    && let Some(arn) = self
                        .find_acm_certificate(
                            upload.certificate_id,
                            upload.domain,
                            upload.for_cloudfront,
                        )
                        .await?
                {
                    return Ok(StoredCertificate { arn, iam_id: None });
                }
                self.import_acm(upload).await
            }
        }
    }

    async fn upload_iam(&self, u: &CertificateUpload<'_>) -> Result<StoredCertificate, CloudError> {
        const OP: &str = "iam:UploadServerCertificate";
        let sent = self
            .iam
            .upload_server_certificate()
            .server_certificate_name(u.name)
            .path(u.path)
            .certificate_body(u.leaf_pem)
            .certificate_chain(u.chain_pem)
            .private_key(u.key_pem)
            .send()
            .await;
        let meta = match sent {
            Ok(out) => out.server_certificate_metadata,
            Err(e) => {
                let e = CloudError::sdk(OP, e);
                if !e.is(&["EntityAlreadyExists"]) {
                    return Err(e);
                }
                self.iam
                    .get_server_certificate()
                    .server_certificate_name(u.name)
                    .send()
                    .await
                    .map_err(|e| CloudError::sdk("iam:GetServerCertificate", e))?
                    .server_certificate
                    .and_then(|c| c.server_certificate_metadata)
            }
        };
        let meta = meta.ok_or_else(|| CloudError::unexpected(OP, "no certificate metadata"))?;
        Ok(StoredCertificate {
            arn: meta.arn,
            iam_id: Some(meta.server_certificate_id),
        })
    }

    async fn import_acm(&self, u: &CertificateUpload<'_>) -> Result<StoredCertificate, CloudError> {
        const OP: &str = "acm:ImportCertificate";
        let tag = built(
            OP,
            aws_sdk_acm::types::Tag::builder()
                .key(ACM_TAG)
                .value(u.certificate_id)
                .build(),
        )?;
        let out = self
            .acm_client(u.for_cloudfront)
            .import_certificate()
            .certificate(Blob::new(u.leaf_pem.as_bytes()))
            .certificate_chain(Blob::new(u.chain_pem.as_bytes()))
            .private_key(Blob::new(u.key_pem.as_bytes()))
            .tags(tag)
            .send()
            .await
            .map_err(|e| CloudError::sdk(OP, e))?;
        let arn = out
            .certificate_arn
            .ok_or_else(|| CloudError::unexpected(OP, "no certificate ARN"))?;
        Ok(StoredCertificate { arn, iam_id: None })
    }

    fn acm_client(&self, for_cloudfront: bool) -> &aws_sdk_acm::Client {
        if for_cloudfront {
            &self.acm_us_east_1
        } else {
            &self.acm
        }
    }

    /// The client of the region an ACM ARN names.
    fn acm_of(&self, arn: &str) -> &aws_sdk_acm::Client {
        let region = arn.split(':').nth(3).unwrap_or_default();
        self.acm_client(region == "us-east-1" && self.config.region.as_deref() != Some(region))
    }

    /// An ACM certificate for this domain tagged with this certificate id,
    /// if one exists.
    pub async fn find_acm_certificate(
        &self,
        certificate_id: &str,
        domain: &str,
        for_cloudfront: bool,
    ) -> Result<Option<String>, CloudError> {
        let acm = self.acm_client(for_cloudfront);
        // Without key types ACM lists RSA certificates only; ours are P-256.
        let key_types = aws_sdk_acm::types::Filters::builder()
            .key_types(aws_sdk_acm::types::KeyAlgorithm::EcPrime256v1)
            .key_types(aws_sdk_acm::types::KeyAlgorithm::Rsa2048)
            .build();
        let mut pages = acm
            .list_certificates()
            .includes(key_types)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::sdk("acm:ListCertificates", e))?;
            for summary in page.certificate_summary_list() {
                let Some(arn) = summary.certificate_arn() else {
                    continue;
                };
                if summary.domain_name() != Some(domain) {
                    continue;
                }
                let tags = acm
                    .list_tags_for_certificate()
                    .certificate_arn(arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::sdk("acm:ListTagsForCertificate", e))?;
                if tags
                    .tags()
                    .iter()
                    .any(|t| t.key() == ACM_TAG && t.value() == Some(certificate_id))
                {
                    return Ok(Some(arn.to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Deletes a stored certificate; one already gone is fine.
    pub async fn delete_certificate(
        &self,
        store: CertificateStore,
        name: &str,
        arn: &str,
    ) -> Result<(), CloudError> {
        let result = if store == CertificateStore::Acm {
            self.acm_of(arn)
                .delete_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| CloudError::sdk("acm:DeleteCertificate", e))
        } else {
            self.iam
                .delete_server_certificate()
                .server_certificate_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| CloudError::sdk("iam:DeleteServerCertificate", e))
        };
        match result {
            Err(e) if e.is(&["NoSuchEntity", "ResourceNotFoundException"]) => Ok(()),
            other => other,
        }
    }
}
