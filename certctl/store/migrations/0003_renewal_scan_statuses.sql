-- certctl schema, version 3: the renewal scan also looks at RenewalInProgress and Failed
-- certificates (a stuck or failed renewal still gets its expiry alerts), so its partial
-- index covers them too; see DUE_STATUSES in certctl/store/base.py.

DROP INDEX managed_certificates_renewal_due_idx;
CREATE INDEX managed_certificates_renewal_due_idx ON managed_certificates (renewal_due_at, id)
    WHERE status IN ('Active', 'Expiring', 'Expired', 'RenewalInProgress', 'Failed');
