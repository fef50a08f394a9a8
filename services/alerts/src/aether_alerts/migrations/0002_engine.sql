-- The engine (engine.py) keeps every active rule in memory; a change of a rule, once committed,
-- is told to every engine replica on channel `alert_rules` (the payload is the rule id), which
-- reads the rule again. Replicas load all rules at start, after they began to listen.
CREATE OR REPLACE FUNCTION alert_rules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('alert_rules', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_rules_notify AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH ROW EXECUTE FUNCTION alert_rules_notify();
