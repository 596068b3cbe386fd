"""Example apps that use Ringmaster the way another team's Django app would."""
