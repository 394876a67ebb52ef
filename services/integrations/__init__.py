"""The integrations service: Google Calendar and QuickBooks Online, connected per org with OAuth."""
