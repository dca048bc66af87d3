"""The transfer engine: prepare the data, build the model, execute the plan, test, write.

``pipeline.run`` is the top of this layer; ``loop.fit`` is the training loop itself.
"""
