from .cli import main

if __name__ == "__main__":  # vLLM may spawn processes that re-import the main module
    main()
