"""The fault bench (``make faults``): real processes under a steady load of creates, one fault per scenario, and
what each fault cost: answers, latency, events written, audited, delivered, lost, duplicated, time to recover."""
