import dagger as dag
from types import MethodType
# Initialize an experiment by defining the type of experiment states it will 
# hold and the directory where they will be stored
exp = dag.Experiment(
    directory='dagger/examples/', 
    state_class=dag.ExperimentState
)


# CUSTOM BLOCK
# Depending on your experiment design, define what it means to initialize an 
# experiment state. In this case, the root state is simply defined by 
# creating a model.
def initialize_state(state):
    from torchvision.models import resnet18
    state.model = resnet18()

# Add this customization to the ExperimentState class (or subclass it to add 
# more functionalities)
dag.ExperimentState.initialize_state = MethodType(initialize_state, 
                                                  dag.ExperimentState)


# create the root ExperimentState
root = exp.spawn_new_tree()


# CUSTOM BLOCK
# Define the action performed by the Recipe by implementing the `run` method.
# In this example, the recipe simply reinitializes the bias in the last 
# fully-connected layer to all zeros. 
def run(recipe, state):
    state.model.fc.bias.data.zero_()
    return state

# Add this customization to the Recipe class (or subclass it to add 
# more functionalities)
dag.Recipe.run = MethodType(run, dag.Recipe)


# Generate a new state as a child of the root state by modifying the model 
# according to the instructions contained in the Recipe's `run` method.
new_state = dag.Recipe()(root)

# Now that this simple graph has been defined (with one root state and a child
# state that only differ in the ) 
exp.run()

