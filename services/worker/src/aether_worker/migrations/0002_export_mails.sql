-- gdpr.export: the mail telling a user their export is ready, sent once per job. The row is
-- inserted in the transaction that sends the mail and commits after the SMTP server accepted
-- it, so a retried or concurrent attempt finds it and sends nothing (gdpr_export.py).
CREATE TABLE export_mails (
    job_id  uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    sent_to text        NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);
