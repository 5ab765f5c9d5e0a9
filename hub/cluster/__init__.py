"""What makes several hubs one system over the store: membership and presence, the fleet
replica, the inbox and outbox between hubs, reaping dead hubs. Knows the store and the
core, never the job path (which it reaches through the `LocalHub` protocol)."""
