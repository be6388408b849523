import Coordinator
print("fedmix: not yet implemented")
