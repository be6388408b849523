import SiteAgent
print("fedmix-agent: not yet implemented")
